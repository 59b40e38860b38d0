"""One RL step, stage by stage: `run_step` reads top to bottom as the algorithm does.

    1. data               the next problems (data.PromptSampler)                      collect.py
    2. rollout            G sampled responses each (rollout.generate)                 collect.py
    3. reward             scores, DAPO's overlong shaping and overlong filtering      collect.py
    4. dynamic sampling   1-3 again until the batch has enough informative groups     collect.py
    5. advantages         rewards normalised within each prompt's group (core.group_advantages)
    6. old log-probs      one no-grad pass of the training model (never the sampler's)
    7. updates            for each mini-batch: log-probs -> core.policy_loss -> backward -> clip
                          -> optimizer step                                           update.py
    8. record             metrics, traces, evaluation, checkpoint

The first mini-batch of a rollout sees the policy that produced the old log-probs, so its
Future-KL is 0 and FIPO equals DAPO there; FIPO re-weights tokens from the 2nd update on.

Records pass between the stages: a `Batch` (stages 1-4), an `Experience` (5-6: what the updates
consume, as tiny-grpo's), `StepProgress` (what the updates did so far) and, at the end, a
`StepResult`. A step interrupted at a safe point (after stage 6, or between updates) keeps its
`StepProgress`; running the step again continues from there, exactly as if nothing had happened.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from ..analysis import traces
from ..analysis.segments import step_segment_metrics
from ..core import future_kl, group_advantages
from ..rollout import Rollout
from .collect import Batch
from .metrics import merge_loss_metrics, rollout_metrics
from .update import accumulate_gradient, micro_batch_ranges, optimizer_step

if TYPE_CHECKING:
    from .trainer import FIPOTrainer

__all__ = ["Experience", "SampledStep", "StepProgress", "StepResult", "run_step"]


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
    advantages: torch.Tensor  # [N] one per response
    old_log_probs: torch.Tensor  # [N, R] log pi_old, from the training model right after the rollout

    def __len__(self) -> int:
        return len(self.batch.rollout)


@dataclass
class StepProgress:
    """A step between its sampling and its last update: what it has done so far."""

    sampled: SampledStep | None = None  # given to step(): trained on instead of sampling anew
    experience: Experience | None = None
    next_update: int = 0  # mini-batches done
    weights: torch.Tensor | None = None  # [N, R] the influence weight each token got in its update
    future_kl: torch.Tensor | None = None  # [N, R] Future-KL at the moment of its update
    log_ratio: torch.Tensor | None = None  # [N, R] log pi_theta - log pi_old at that moment
    mini_batch: torch.Tensor | None = None  # [N] index of the update that used each row
    in_loss: torch.Tensor | None = None  # [N] rows that entered the loss (not overlong-filtered, not dropped)
    loss_metrics: list = field(default_factory=list)  # policy_loss metrics of every micro-batch
    grad_norms: list = field(default_factory=list)
    skipped: int = 0  # updates with a non-finite loss or gradient
    empty: int = 0  # mini-batches without a token in the loss: no optimizer step
    metrics: dict = field(default_factory=dict)  # from sampling
    times: dict = field(default_factory=dict)

    def start(self, experience: Experience, metrics: dict, times: dict) -> None:
        """Stages 1-6 are done: the updates can begin."""
        shape = experience.batch.rollout.response_ids.shape  # [N, R]
        self.experience, self.metrics, self.times = experience, metrics, times
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
    advantages: torch.Tensor  # [N]
    old_log_probs: torch.Tensor  # [N, R]
    weights: torch.Tensor  # [N, R] the influence weight each token got in its update
    future_kl: torch.Tensor  # [N, R] Future-KL at the moment of its update
    log_ratio: torch.Tensor  # [N, R] log pi_theta - log pi_old at the moment of its update
    mini_batch: torch.Tensor  # [N] index of the update that used each row
    in_loss: torch.Tensor  # [N] bool: False for rows overlong-filtered or removed by the drop rule
    problems: list = field(default_factory=list)


def run_step(trainer: "FIPOTrainer", progress: StepProgress, safe_point: Callable[[str], None]) -> StepResult:
    """Run (or continue) step `trainer.step_count + 1` from `progress`; `safe_point(where)` is called
    where the step may stop (it raises KeyboardInterrupt when an interrupt was asked for)."""
    config = trainer.config
    step = trainer.step_count + 1  # becomes the trainer's count only once everything fallible is done
    if progress.experience is None:
        # 1-4. data -> rollout -> reward (overlong shaping and filtering) -> dynamic sampling
        sampled = progress.sampled or trainer.sample()
        batch = sampled.batch
        started = time.perf_counter()
        # 5. advantages: A_i = (R_i - mean_group(R)) / (std_group(R) + eps)
        advantages = group_advantages(batch.rewards, config.samples_per_prompt)  # [N]
        # 6. old log-probs, split into micro-batches as the updates split them
        old_log_probs = log_probs(trainer, batch.rollout)  # [N, R]
        times = {**sampled.times, "logprob_s": time.perf_counter() - started, "update_s": 0.0}
        progress.start(Experience(batch, batch.loss_mask, advantages, old_log_probs), dict(sampled.metrics), times)
        safe_point(f"step {step} sampled; its updates run on the next call")

    # 7. for each mini-batch, in order: log-probs -> core.policy_loss -> backward -> clip -> optimizer step
    experience = progress.experience
    rollout = experience.batch.rollout
    mini_batches = micro_batch_ranges(len(rollout), config.mini_batch_size * config.samples_per_prompt,
                                      config.micro_batch_size)
    params = trainer.policy.trainable_parameters()
    for index in range(progress.next_update, len(mini_batches)):
        started = time.perf_counter()
        micro_batches = mini_batches[index]
        rows = slice(micro_batches[0].start, micro_batches[-1].stop)
        progress.mini_batch[rows] = index
        gradient = accumulate_gradient(  # log-probs, policy_loss and backward of each micro-batch
            micro_batches, lambda micro: trainer.micro_log_probs(rollout.select(micro)), experience.old_log_probs,
            experience.advantages, experience.loss_mask, rollout.response_mask, config.fipo, params,
        )
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
    result = StepResult(
        step=step, metrics=metrics, rollout=rollout, prompts=batch.prompts, responses=batch.responses,
        rewards=batch.rewards, correct=[s.correct for s in batch.scored], advantages=experience.advantages,
        old_log_probs=experience.old_log_probs, weights=progress.weights, future_kl=progress.future_kl,
        log_ratio=progress.log_ratio, mini_batch=progress.mini_batch, in_loss=progress.in_loss,
        problems=batch.problems,
    )
    metrics.update(step_segment_metrics(result, trainer.policy.tokenizer))  # weight per reasoning segment
    if config.trace_samples:
        write_traces(trainer, result)
    trace_s = time.perf_counter() - started
    if trainer.eval_problems and config.eval_every and step % config.eval_every == 0:
        metrics.update(trainer.evaluate(step=step))
    times = progress.times
    step_s = sum(times.values()) + trace_s
    metrics.update({
        "time/generate_s": times["generate_s"], "time/reward_s": times["reward_s"],
        "time/logprob_s": times["logprob_s"], "time/update_s": times["update_s"], "time/step_s": step_s,
        "tokens_per_s": float(rollout.response_lengths.sum()) / step_s,
    })
    trainer.complete_step(result)  # metrics.jsonl, the lr schedule, the step count
    if config.save_every > 0 and step % config.save_every == 0:
        trainer.save()
    return result


def log_probs(trainer: "FIPOTrainer", rollout: Rollout, rows: list[int] | None = None) -> torch.Tensor:
    """No-grad per-token log-probs ([n, R], 0 at padding) of `rows` as one mini-batch, or of every row
    split into mini- and micro-batches as the updates split them (so that both pad the same rows to
    the same widths and the first mini-batch's log-ratio is exactly 0 on any device)."""
    config = trainer.config
    if rows is None:
        rows = list(range(len(rollout)))
        parts = micro_batch_ranges(len(rows), config.mini_batch_size * config.samples_per_prompt,
                                   config.micro_batch_size)
    else:
        rows = list(rows)
        parts = micro_batch_ranges(len(rows), max(len(rows), 1), config.micro_batch_size)
    out = torch.zeros(len(rows), rollout.response_ids.shape[1])  # [n, R]
    with torch.no_grad():
        for micro in (m for mini in parts for m in mini):
            values = trainer.micro_log_probs(rollout.select([rows[i] for i in micro]))  # [m, R_part]
            out[micro.start: micro.stop, : values.shape[1]] = values.detach().cpu()
    return out


def write_traces(trainer: "FIPOTrainer", result: StepResult) -> None:
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
