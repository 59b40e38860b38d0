"""One RL step, stage by stage: `run_step` reads top to bottom as the algorithm does.

    1. data               the next problems (data.PromptSampler)                      collect.py
    2. rollout            G sampled responses each (rollout.generate)                 collect.py
    3. reward             scores, DAPO's overlong shaping and overlong filtering      collect.py
    4. dynamic sampling   1-3 again until the batch has enough informative groups     collect.py
    5. old log-probs      one no-grad pass of the training model (never the sampler's) over the rows
                          of the 2nd mini-batch on; the 1st update's own forward gives its rows'
                          (below); with a critic (advantage_estimator="gae"), its values beside them
    6. advantages         rewards normalised within each prompt's group (core.group_advantages),
                          or GAE over the critic's values (ppo.gae) and the critic's returns
    7. updates            for each mini-batch: [the critic: values -> ppo.value_loss -> step, then]
                          log-probs -> core.policy_loss -> backward -> clip -> optimizer step  update.py
    8. record             metrics, traces, evaluation, checkpoint

The first mini-batch of a rollout sees the policy that produced the old log-probs, so its
Future-KL is 0 and FIPO equals DAPO there; FIPO re-weights tokens from the 2nd update on. Since
the weights have not moved before that update, its forward pass *is* the old-log-prob pass of its
rows: their old log-probs are taken from it (detached), so the log-ratio is exactly 0 there and
the no-grad pass skips those rows (verl does the same when a rollout is one mini-batch: on_policy).

Records pass between the stages: a `Batch` (stages 1-4), an `Experience` (5-6: what the updates
consume, as tiny-grpo's), `StepProgress` (what the updates did so far) and, at the end, a
`StepResult`. A step interrupted at a safe point (after stage 6, or between updates) keeps its
`StepProgress`; running the step again continues from there, exactly as if nothing had happened.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from ..analysis import traces
from ..analysis.segments import step_segment_metrics
from ..core import future_kl, group_advantages
from ..ppo import critic_metrics, gae, length_adaptive_lambda
from ..rollout import Rollout
from .collect import Batch
from .heap import release_freed_memory
from .metrics import merge_loss_metrics, rollout_metrics
from .update import accumulate_gradient, micro_batch_ranges, optimizer_step, value_update


__all__ = ["Experience", "SampledStep", "StepProgress", "StepResult", "run_step"]


class Trainer(Protocol):
    """What a step reads and calls of its trainer (train/trainer.FIPOTrainer; the trainer imports this module,
    not the other way round)."""

    config: Any
    policy: Any
    optimizer: Any
    critic: Any  # models.Critic or None
    critic_optimizer: Any
    eval_problems: Any
    out_dir: Any
    step_count: int

    def sample(self) -> "SampledStep": ...
    def micro_log_probs(self, part: Rollout) -> torch.Tensor: ...
    def evaluate(self, *, step: int | None = None) -> dict: ...
    def complete_step(self, result: "StepResult") -> None: ...
    def save(self) -> Any: ...


@dataclass
class SampledStep:
    """A step's sampled and scored rows, before any update (stages 1-4: `FIPOTrainer.sample`)."""

    batch: Batch
    metrics: dict[str, float]  # dynamic sampling, overlong, prompt truncation
    times: dict[str, float]  # generate_s, reward_s


@dataclass
class Experience:
    """What the updates of a step consume (stages 5-6). Tensors are on the CPU."""

    batch: Batch
    loss_mask: torch.Tensor  # [N, R] response tokens that enter the loss (overlong filtering applied)
    advantages: torch.Tensor  # [N] one per response (group-normalised), or [N, R] per token (GAE)
    old_log_probs: torch.Tensor  # [N, R] log pi_old, from the training model right after the rollout
    values: torch.Tensor | None = None  # [N, R] the critic's values at rollout time (GAE only)
    returns: torch.Tensor | None = None  # [N, R] the critic's targets (GAE only)

    def __len__(self) -> int:
        return len(self.batch.rollout)


@dataclass
class StepProgress:
    """A step between its sampling and its last update: what it has done so far."""

    sampled: SampledStep | None = None  # given to step(): trained on instead of sampling anew
    experience: Experience | None = None
    next_update: int = 0  # mini-batches done
    old_pending: bool = False  # the 1st mini-batch's old log-probs are still to come from its update's forward
    weights: torch.Tensor | None = None  # [N, R] the influence weight each token got in its update
    future_kl: torch.Tensor | None = None  # [N, R] Future-KL at the moment of its update
    log_ratio: torch.Tensor | None = None  # [N, R] log pi_theta - log pi_old at that moment
    mini_batch: torch.Tensor | None = None  # [N] index of the update that used each row
    in_loss: torch.Tensor | None = None  # [N] rows that entered the loss (not overlong-filtered, not dropped)
    loss_metrics: list = field(default_factory=list)  # policy_loss metrics of every micro-batch
    grad_norms: list = field(default_factory=list)
    critic_updates: list = field(default_factory=list)  # update.ValueUpdate per mini-batch (GAE only)
    skipped: int = 0  # updates with a non-finite loss or gradient
    empty: int = 0  # mini-batches without a token in the loss: no optimizer step
    metrics: dict = field(default_factory=dict)  # from sampling
    times: dict = field(default_factory=dict)

    def start(self, experience: Experience, metrics: dict, times: dict, *, old_pending: bool = False) -> None:
        """Stages 1-6 are done: the updates can begin."""
        shape = experience.batch.rollout.response_ids.shape  # [N, R]
        self.experience, self.metrics, self.times, self.old_pending = experience, metrics, times, old_pending
        self.weights, self.future_kl, self.log_ratio = torch.ones(shape), torch.zeros(shape), torch.zeros(shape)
        self.mini_batch = torch.zeros(shape[0], dtype=torch.long)
        self.in_loss = experience.loss_mask.any(dim=1)
        self.sampled = None


@dataclass
class StepResult:
    """What one step trained on and produced, on the CPU. Tensors are [N] or [N, R]."""

    step: int
    metrics: dict[str, float]
    rollout: Rollout
    prompts: list[str]  # formatted prompt text per row
    responses: list[str]  # decoded response text per row
    rewards: torch.Tensor  # [N] after overlong shaping
    correct: list[bool]  # [N]
    advantages: torch.Tensor  # [N] per response (GAE: the mean of its tokens' advantages)
    old_log_probs: torch.Tensor  # [N, R]
    weights: torch.Tensor  # [N, R] the influence weight each token got in its update
    future_kl: torch.Tensor  # [N, R] Future-KL at the moment of its update
    log_ratio: torch.Tensor  # [N, R] log pi_theta - log pi_old at the moment of its update
    mini_batch: torch.Tensor  # [N] index of the update that used each row
    in_loss: torch.Tensor  # [N] bool: False for rows overlong-filtered or removed by the drop rule
    problems: list = field(default_factory=list)
    token_advantages: torch.Tensor | None = None  # [N, R] the advantage each token's loss used: A * f_t
    values: torch.Tensor | None = None  # [N, R] the critic's values at rollout time (GAE only)
    returns: torch.Tensor | None = None  # [N, R] the critic's targets (GAE only)


def run_step(trainer: "Trainer", progress: StepProgress, safe_point: Callable[[str], None]) -> StepResult:
    """Run (or continue) step `trainer.step_count + 1` from `progress`; `safe_point(where)` is called
    where the step may stop (it raises KeyboardInterrupt when an interrupt was asked for)."""
    config = trainer.config
    step = trainer.step_count + 1  # becomes the trainer's count only once everything fallible is done
    if progress.experience is None:
        # 1-4. data -> rollout -> reward (overlong shaping and filtering) -> dynamic sampling
        release_freed_memory()  # each stage runs on memory fresh from the system (heap.py)
        sampled = progress.sampled or trainer.sample()
        batch = sampled.batch
        started = time.perf_counter()
        release_freed_memory()
        # 5. old log-probs, split into micro-batches as the updates split them; the first mini-batch's
        # come from its own update's forward (the weights have not moved yet) when that update will run
        first_scores_itself = first_update_scores_itself(trainer, batch, step)
        old_log_probs = log_probs(trainer, batch.rollout, skip_first=first_scores_itself)  # [N, R]
        times = {**sampled.times, "logprob_s": time.perf_counter() - started, "update_s": 0.0, "critic_s": 0.0}
        if trainer.critic is None:
            # 6. advantages: A_i = (R_i - mean_group(R)) / (std_group(R) + eps)
            experience = Experience(batch, batch.loss_mask, group_advantages(batch.rewards, config.samples_per_prompt),
                                    old_log_probs)
        else:
            started = time.perf_counter()
            # 5b. the critic's values at rollout time, split as its updates split the rows
            values = critic_values(trainer, batch.rollout)  # [N, R]
            # 6. GAE advantages (whitened) for the policy, returns for the critic (each its own lambda)
            advantages, returns = gae_targets(config, batch, values)  # [N, R] each
            experience = Experience(batch, batch.loss_mask, advantages, old_log_probs, values, returns)
            times["critic_s"] += time.perf_counter() - started
        progress.start(experience, dict(sampled.metrics), times, old_pending=first_scores_itself)
        safe_point(f"step {step} sampled; its updates run on the next call")

    # 7. for each mini-batch, in order: log-probs -> core.policy_loss -> backward -> clip -> optimizer step
    experience = progress.experience
    rollout = experience.batch.rollout
    mini_batches = micro_batch_ranges(len(rollout), config.mini_batch_size * config.samples_per_prompt,
                                      config.micro_batch_size)
    params = trainer.policy.trainable_parameters()
    train_policy = trainer.critic is None or step >= config.critic_warmup  # verl: critic_warmup <= global step
    for index in range(progress.next_update, len(mini_batches)):
        micro_batches = mini_batches[index]
        rows = slice(micro_batches[0].start, micro_batches[-1].stop)
        progress.mini_batch[rows] = index
        if trainer.critic is not None:  # verl updates the critic first, on the same mini-batch
            started = time.perf_counter()
            progress.critic_updates.append(update_critic(trainer, rollout, experience, micro_batches))
            progress.times["critic_s"] += time.perf_counter() - started
        if not train_policy:
            progress.next_update += 1
            if progress.next_update < len(mini_batches):
                safe_point(f"step {step} stopped after update {progress.next_update}; the next call finishes it")
            continue
        started = time.perf_counter()
        on_policy = index == 0 and progress.old_pending  # this forward gives the mini-batch's old log-probs
        gradient = accumulate_gradient(  # log-probs, policy_loss and backward of each micro-batch
            micro_batches, lambda micro: trainer.micro_log_probs(rollout.select(micro)), experience.old_log_probs,
            experience.advantages, experience.loss_mask, rollout.response_mask, config.fipo, params,
            on_policy=on_policy,
        )
        if on_policy:
            if not gradient.finite:  # it stopped early: the rest of its rows from the no-grad pass (no step follows)
                experience.old_log_probs[rows] = log_probs(trainer, rollout, skip_first=False, only_first=True)
            progress.old_pending = False
        progress.loss_metrics.extend(gradient.metrics)
        progress.log_ratio[rows], progress.weights[rows], progress.future_kl[rows] = \
            gradient.log_ratio, gradient.weights, gradient.future_kl
        progress.in_loss[rows] &= gradient.in_loss
        norm = optimizer_step(trainer.optimizer, params, gradient, config.grad_clip)  # clip, then step
        if norm == "empty":
            progress.empty += 1
        elif norm == "skipped":
            progress.skipped += 1
            warnings.warn(f"step {step}, update {index}: non-finite loss or gradient; update skipped, weights "
                          "untouched", stacklevel=4)
        else:
            progress.grad_norms.append(norm)
        progress.next_update += 1
        progress.times["update_s"] += time.perf_counter() - started
        if progress.next_update < len(mini_batches):
            safe_point(f"step {step} stopped after update {progress.next_update}; the next call finishes it")

    # 8. metrics, traces, evaluation, checkpoint
    started = time.perf_counter()
    batch = experience.batch
    metrics = {
        "step": step,
        **rollout_metrics(batch, config.samples_per_prompt),
        **progress.metrics,
        **merge_loss_metrics(progress.loss_metrics),
        "update/count": float(progress.next_update),
        "update/skipped": float(progress.skipped),
        "update/empty": float(progress.empty),
        "grad_norm": sum(progress.grad_norms) / len(progress.grad_norms) if progress.grad_norms else 0.0,
        "grad_norm_max": max(progress.grad_norms) if progress.grad_norms else 0.0,
        "lr": trainer.optimizer.param_groups[0]["lr"],
    }
    if trainer.critic is not None:
        metrics.update(step_critic_metrics(trainer, experience, progress, train_policy))
    per_token = experience.advantages if experience.advantages.dim() == 2 else \
        experience.advantages[:, None].expand_as(progress.weights)  # [N, R]
    mask = rollout.response_mask
    row_advantages = experience.advantages if experience.advantages.dim() == 1 else \
        (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # [N] GAE: mean over the response
    result = StepResult(
        step=step, metrics=metrics, rollout=rollout, prompts=batch.prompts, responses=batch.responses,
        rewards=batch.rewards, correct=[s.correct for s in batch.scored], advantages=row_advantages,
        old_log_probs=experience.old_log_probs, weights=progress.weights, future_kl=progress.future_kl,
        log_ratio=progress.log_ratio, mini_batch=progress.mini_batch, in_loss=progress.in_loss,
        problems=batch.problems, token_advantages=(per_token * progress.weights).masked_fill(~mask, 0.0),
        values=experience.values, returns=experience.returns,
    )
    metrics.update(step_segment_metrics(result, trainer.policy.tokenizer))  # weight per reasoning segment
    if config.trace_samples:
        write_traces(trainer, result)
    trace_s = time.perf_counter() - started
    if trainer.eval_problems and config.eval_every and (step % config.eval_every == 0 or step == config.steps):
        # every eval_every-th step and the run's last, as verl's trainer (test_freq, is_last_step)
        metrics.update(trainer.evaluate(step=step))
    times = progress.times
    step_s = sum(times.values()) + trace_s
    metrics.update({
        "time/generate_s": times["generate_s"], "time/reward_s": times["reward_s"],
        "time/logprob_s": times["logprob_s"], "time/update_s": times["update_s"], "time/step_s": step_s,
        **({"time/critic_s": times["critic_s"]} if trainer.critic is not None else {}),
        "tokens_per_s": float(rollout.response_lengths.sum()) / step_s,
    })
    trainer.complete_step(result)  # metrics.jsonl, the lr schedule, the step count
    if config.save_every > 0 and step % config.save_every == 0:
        trainer.save()
    return result


def critic_values(trainer: "Trainer", rollout: Rollout) -> torch.Tensor:
    """No-grad values [N, R] of every row (0 at padding), split into mini- and micro-batches as the
    critic's updates split them, so the first update's values start exactly at the old ones."""
    config, critic = trainer.config, trainer.critic
    parts = micro_batch_ranges(len(rollout), config.mini_batch_size * config.samples_per_prompt,
                               config.micro_batch_size)

    def masked_values(part: Rollout) -> torch.Tensor:
        values = critic.values(part.prompt_ids, part.prompt_mask, part.response_ids, part.response_mask)
        return values * part.response_mask.to(values.device)

    with critic.active():
        return _per_token_no_grad(rollout, list(range(len(rollout))), parts, masked_values)


def gae_targets(config, batch: Batch, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages for the policy, returns for the critic), [N, R] each: GAE with gamma 1 and the one
    reward at each response's last token. The policy's lambda is gae_lambda, or VAPO's length-adaptive
    1 - 1 / (alpha * length) when gae_lambda_alpha is set; the critic's is critic_gae_lambda (VC-PPO's
    decoupled GAE). Advantages are whitened over the batch's response tokens (verl)."""
    rollout = batch.rollout
    mask = rollout.response_mask.long()  # [N, R]
    lengths = rollout.response_lengths.long()  # [N]
    rewards = torch.zeros(values.shape, dtype=values.dtype)  # [N, R]
    last = (lengths - 1).clamp(min=0)
    rewards[torch.arange(len(lengths)), last] = batch.rewards.to(values.dtype) * (lengths > 0)
    lam = config.gae_lambda if config.gae_lambda_alpha is None else \
        length_adaptive_lambda(lengths, config.gae_lambda_alpha).to(values.dtype)
    advantages, returns = gae(rewards, values, mask, 1.0, lam)
    if config.gae_lambda_alpha is not None or config.critic_gae_lambda != config.gae_lambda:
        _, returns = gae(rewards, values, mask, 1.0, config.critic_gae_lambda)
    return advantages * mask, returns * mask


def update_critic(trainer: "Trainer", rollout: Rollout, experience: Experience, micro_batches: list[range]):
    """One critic update on a mini-batch (update.value_update) with the critic's adapter active."""
    config, critic = trainer.config, trainer.critic

    def values_of(micro: range) -> torch.Tensor:
        part = rollout.select(micro)
        return critic.values(part.prompt_ids, part.prompt_mask, part.response_ids, part.response_mask)

    with critic.active():
        return value_update(micro_batches, values_of, experience.values, experience.returns, experience.loss_mask,
                            config.value_clip, trainer.critic_optimizer, critic.parameters(), config.grad_clip)


def step_critic_metrics(trainer: "Trainer", experience: Experience, progress: StepProgress,
                        train_policy: bool) -> dict[str, float]:
    """verl's critic metrics of the step: values, returns, advantages, explained variance, and the value
    loss and clip fraction averaged over the critic's updates; whether the policy sat out (critic_warmup)."""
    updates = progress.critic_updates
    norms = [u.grad_norm for u in updates if not isinstance(u.grad_norm, str)]
    mask = experience.batch.rollout.response_mask
    metrics = critic_metrics(experience.values, experience.returns, experience.advantages, mask,
                             vf_loss=sum(u.loss for u in updates) / max(len(updates), 1),
                             vf_clipfrac=sum(u.clipfrac for u in updates) / max(len(updates), 1))
    metrics.update({
        "critic/grad_norm": sum(norms) / len(norms) if norms else 0.0,
        "critic/lr": trainer.critic_optimizer.param_groups[0]["lr"],
        "critic/warmup": 0.0 if train_policy else 1.0,
    })
    return metrics


def first_update_scores_itself(trainer: "Trainer", batch: Batch, step: int) -> bool:
    """Whether the step's first policy update will run a forward over every row of its mini-batch from the
    sampling-time weights, so that its log-probs can serve as their old ones: it trains the policy (not a
    critic warm-up step) and has a token in the loss (else it returns before any forward)."""
    config = trainer.config
    if trainer.critic is not None and step < config.critic_warmup:
        return False
    first = micro_batch_ranges(len(batch.rollout), config.mini_batch_size * config.samples_per_prompt,
                               config.micro_batch_size)[0]
    return bool(batch.loss_mask[first[0].start: first[-1].stop].any())


def log_probs(trainer: "Trainer", rollout: Rollout, rows: list[int] | None = None, *, skip_first: bool = False,
              only_first: bool = False) -> torch.Tensor:
    """No-grad per-token log-probs ([n, R], 0 at padding) of `rows` as one mini-batch, or of every row
    split into mini- and micro-batches as the updates split them (so that both pad the same rows to
    the same widths): all of them, all but the first mini-batch's (`skip_first`: its rows stay 0) or
    the first mini-batch's alone (`only_first`: [rows of the first mini-batch, R])."""
    config = trainer.config
    if rows is None:
        rows = list(range(len(rollout)))
        parts = micro_batch_ranges(len(rows), config.mini_batch_size * config.samples_per_prompt,
                                   config.micro_batch_size)
        if only_first:
            rows, parts = rows[: parts[0][-1].stop], parts[:1]
        elif skip_first:
            parts = parts[1:]
    else:
        rows = list(rows)
        parts = micro_batch_ranges(len(rows), max(len(rows), 1), config.micro_batch_size)
    return _per_token_no_grad(rollout, rows, parts, trainer.micro_log_probs)


def _per_token_no_grad(rollout: Rollout, rows: list[int], parts: list[list[range]], per_token) -> torch.Tensor:
    """per_token(micro-batch's rows) [m, R_part] for each micro-batch of `parts` (ranges into `rows`), without
    gradients, gathered into [n, R] on the CPU (0 past each micro-batch's width)."""
    out = torch.zeros(len(rows), rollout.response_ids.shape[1])  # [n, R]
    with torch.no_grad():
        for micro in (m for mini in parts for m in mini):
            values = per_token(rollout.select([rows[i] for i in micro]))  # [m, R_part]
            out[micro.start: micro.stop, : values.shape[1]] = values.detach().cpu()
    return out


def write_traces(trainer: "Trainer", result: StepResult) -> None:
    """Per-token records of `trace_samples` rows, spread over mini-batches and advantage signs, to
    OUT/traces/step-N.parquet; with `trace_post_update`, also the Future-KL of the whole step's update."""
    config = trainer.config
    rows = traces.select_rows(result.mini_batch, result.advantages, config.trace_samples,
                              seed=config.seed * 7919 + result.step)
    post = None
    if config.trace_post_update and rows:
        mask = result.rollout.response_mask[rows]  # [k, R]
        new = log_probs(trainer, result.rollout, rows)  # [k, R] after the last update
        post = future_kl(new - result.old_log_probs[rows], mask, decay_rate=config.fipo.decay_rate,
                         dual_clip=config.fipo.dual_clip, log_ratio_clamp=config.fipo.log_ratio_clamp)
    records = traces.step_records(result, rows, trainer.policy.tokenizer, loss=config.fipo.loss,
                                  post_update_future_kl=post)
    traces.write_step(trainer.out_dir, result.step, records)
