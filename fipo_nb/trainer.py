"""FIPOTrainer: sequences one RL step out of plain functions.

    prompts (data) -> rollout (G samples each) -> rewards (+ overlong shaping)
      -> dynamic sampling: keep groups whose rewards differ, sample more until the batch is full
      -> group advantages -> old log-probs: one no-grad pass of the training model (never the sampler's)
      -> for each mini-batch, in order: new log-probs -> core.policy_loss -> backward -> optimizer step
      -> metrics (one JSON line), token traces, evaluation, checkpoint

The first mini-batch of a rollout sees the policy that produced the old log-probs, so its
Future-KL is 0 and FIPO equals DAPO there; FIPO re-weights tokens from the 2nd update on.

A step in progress lives in `self._pending`, so that an interrupt (Ctrl-C, or the notebook's
stop button) takes effect at a safe point, between mini-batches or steps, and the next
`step()` / `train()` finishes that step exactly as if nothing had happened.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import phases, trace
from .checkpoint import (
    CheckpointError,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
    save_training_state,
    write_checkpoint,
)
from .config import TrainConfig
from .core import future_kl, group_advantages
from .data import PromptSampler, config_problems
from .evaluation import evaluate, length_metrics
from .interrupts import SafeInterrupt
from .models import Policy, load_policy, switch_off_dropout
from .packing import response_logprobs
from .rewards import MathReward
from .rollout import Rollout, pad_token_id
from .runlog import RunLog, format_table_header, format_table_row
from .sampling import Batch, sample_batch
from .segment_metrics import step_segment_metrics
from .update import accumulate_gradient, merge_loss_metrics, micro_batch_ranges


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


@dataclass
class SampledStep:
    """A step's sampled and scored rows, before any update (`FIPOTrainer.sample`)."""

    batch: Batch
    metrics: dict[str, float]  # dynamic sampling, overlong, prompt truncation
    times: dict[str, float]  # generate_s, reward_s


@dataclass
class _Pending:
    """A step between its sampling and its last update."""

    batch: Batch
    loss_mask: torch.Tensor  # [N, R] response tokens that enter the loss
    advantages: torch.Tensor
    old_log_probs: torch.Tensor
    weights: torch.Tensor
    future_kl: torch.Tensor
    log_ratio: torch.Tensor
    mini_batch: torch.Tensor
    in_loss: torch.Tensor  # [N] rows that entered the loss (not overlong-filtered, not dropped)
    next_update: int = 0
    empty: int = 0  # mini-batches without a token in the loss: no optimizer step
    parts: list = field(default_factory=list)
    grad_norms: list = field(default_factory=list)
    skipped: int = 0
    metrics: dict = field(default_factory=dict)  # from sampling
    times: dict = field(default_factory=dict)


def _lr_multiplier(config: TrainConfig):
    """lr factor of step `step` (0-based; every update of a step uses it), as verl's schedules: warm-up
    gives step k the rate lr * k / N, so the first step trains at 0 (its Adam moments still update)."""
    def multiplier(step: int) -> float:
        if step < config.lr_warmup_steps:
            return step / config.lr_warmup_steps
        if config.lr_schedule == "cosine":
            span = max(config.steps - config.lr_warmup_steps, 1)
            progress = min((step - config.lr_warmup_steps) / span, 1.0)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return multiplier


class FIPOTrainer:
    """FIPO (or DAPO / GRPO, by `config.fipo.loss`) training, one `step()` at a time.

    policy / problems / reward_fn default to what `config` names; pass them to use your own
    (a `models.Policy`, a list of `data.Problem`, any callable (prompt, response, sample) -> float).
    A new trainer starts a new run in `config.output_dir` (earlier metrics, traces and
    checkpoints there are removed, with a warning); `FIPOTrainer.resume(run_dir)` continues one.
    """

    def __init__(self, config: TrainConfig, *, policy: Policy | None = None, problems=None, reward_fn=None,
                 eval_problems=None, _resuming: bool = False):
        self.config = config.validate()
        if config.strategy != "single":
            raise ValueError(
                f"strategy {config.strategy!r} needs the scale-out path: verl runs it, "
                "`fipo-nb launch verl --preset NAME` writes the launch and `fipo-nb plan --preset NAME` its memory plan"
            )
        if config.advantage_estimator != "grpo":
            raise ValueError(f"advantage_estimator {config.advantage_estimator!r} (PPO) needs a critic, which only the "
                             "scale-out path has: `fipo-nb launch verl`")
        self.problems = list(problems) if problems is not None else config_problems(config, "train")
        self.eval_problems = eval_problems  # data first: a bad file fails before a model is loaded
        if eval_problems is None and config.eval_data is not None:  # eval_limit counts distinct problems
            self.eval_problems = config_problems(config, "eval")
        torch.manual_seed(config.seed)
        self.policy = policy or load_policy(
            config.model, config.mode, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
            target_modules=_target_modules(config.lora_target_modules), dtype=config.dtype, device=config.device,
            gradient_checkpointing=config.gradient_checkpointing, seed=config.seed,
        )
        if policy is not None:  # a Policy built elsewhere: its dropout off too (load_policy does it for its own)
            switch_off_dropout(self.policy.model)
        self.reward_fn = reward_fn or MathReward(
            correct=config.reward_correct, incorrect=config.reward_incorrect, mode=config.answer_mode
        )
        gen_prompts = config.gen_prompts_per_batch if config.dynamic_sampling and config.gen_prompts_per_batch else \
            config.prompts_per_step
        self.sampler = PromptSampler(self.problems, gen_prompts, seed=config.seed)
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_multiplier(config))
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self._pending: _Pending | None = None
        self._saved_step: int | None = None
        self.interrupt = SafeInterrupt()
        self.out_dir = Path(config.output_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.out_dir)
        if not _resuming:
            self._clear_run_files(0)
        (self.out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ one step

    def sample(self) -> SampledStep:
        """Sample and score the next step's rows without training on them; `step(sampled)` trains on
        them (e.g. each loss on one rollout). Advances the data order as a step does."""
        config = self.config
        batch, metrics, times = sample_batch(
            self.policy, self.sampler, self.reward_fn, config, pad_id=pad_token_id(self.policy.tokenizer),
            seed=config.seed * 1_000_003 + self.step_count * 1_009,  # sampling is reproducible per step
        )
        return SampledStep(batch, metrics, times)

    def step(self, sampled: SampledStep | None = None) -> StepResult:
        """Run one step (or finish the interrupted one); append its metrics to metrics.jsonl.
        `sampled` (from `sample()`) trains on those rows instead of sampling new ones.

        Ctrl-C / the notebook's stop button takes effect after the current mini-batch: the step
        stays pending, KeyboardInterrupt is raised, and the next call finishes it.
        """
        if sampled is not None and self._pending is not None:
            raise RuntimeError("step(sampled): a step is half done; call step() to finish it first")
        with self.interrupt:
            return self._step(sampled)

    def _step(self, sampled: SampledStep | None = None) -> StepResult:
        if self._pending is None:
            self._pending = self._start_step(sampled or self.sample())
        self.interrupt.check(f"step {self.step_count + 1} sampled; its updates run on the next call")
        while not self._run_update(self._pending):
            self.interrupt.check(
                f"step {self.step_count + 1} stopped after update {self._pending.next_update}; the next call finishes it"
            )
        return self._finish_step()

    def _start_step(self, sampled: SampledStep) -> _Pending:
        config = self.config
        batch, metrics, times = sampled.batch, dict(sampled.metrics), dict(sampled.times)
        started = time.perf_counter()
        loss_mask = batch.rollout.response_mask.clone()  # [N, R]
        truncated = torch.tensor([f == "length" for f in batch.rollout.finish_reasons])  # [N]
        if config.overlong_filter:
            loss_mask[truncated] = False  # DAPO's overlong filtering: truncated responses stay out of the loss
        metrics["overlong/filtered_frac"] = float(config.overlong_filter) * truncated.float().mean().item()
        advantages = group_advantages(batch.rewards, config.samples_per_prompt)  # [N]
        old_log_probs = self._log_probs(batch.rollout, grad=False)  # [N, R]
        shape = batch.rollout.response_ids.shape
        return _Pending(
            batch=batch, loss_mask=loss_mask, advantages=advantages, old_log_probs=old_log_probs,
            weights=torch.ones(shape), future_kl=torch.zeros(shape), log_ratio=torch.zeros(shape),
            mini_batch=torch.zeros(shape[0], dtype=torch.long), in_loss=loss_mask.any(dim=1), metrics=metrics,
            times={**times, "logprob_s": time.perf_counter() - started, "update_s": 0.0},
        )

    def _micro_batch_ranges(self, n_rows: int) -> list[list[range]]:
        """Rows per mini-batch, split into micro-batches: one split for the old-log-prob pass and the updates."""
        config = self.config
        return micro_batch_ranges(n_rows, config.mini_batch_size * config.samples_per_prompt, config.micro_batch_size)

    def _log_probs(self, rollout: Rollout, *, grad: bool, rows: list[int] | None = None) -> torch.Tensor:
        """Per-token log-probs ([n, R], 0 at padding) of `rows`, or of every row split as the updates split them."""
        if rows is None:
            rows, parts = list(range(len(rollout))), [m for mb in self._micro_batch_ranges(len(rollout)) for m in mb]
        else:  # these rows as one mini-batch
            rows = list(rows)
            parts = [m for mb in micro_batch_ranges(len(rows), max(len(rows), 1), self.config.micro_batch_size)
                     for m in mb]
        out = torch.zeros(len(rows), rollout.response_ids.shape[1])
        with torch.set_grad_enabled(grad):
            for micro in parts:
                values = self._micro_log_probs(rollout.select([rows[i] for i in micro]))
                out[micro.start: micro.stop, : values.shape[1]] = values.detach().cpu()
        return out

    def _micro_log_probs(self, part: Rollout) -> torch.Tensor:  # response_logprobs moves the rows to the model
        return response_logprobs(
            self.policy.model, part.prompt_ids, part.prompt_mask, part.response_ids, part.response_mask,
            pad_id=pad_token_id(self.policy.tokenizer), temperature=self.config.temperature or 1.0,
            chunk_size=self.config.logprob_chunk_size, pack=self.config.pack_sequences,
        )  # [n, R_part]

    def _run_update(self, pending: _Pending) -> bool:
        """The next mini-batch's optimizer update; True once the step has no update left."""
        config = self.config
        rollout = pending.batch.rollout
        mini_batches = self._micro_batch_ranges(len(rollout))
        if pending.next_update >= len(mini_batches):
            return True
        started = time.perf_counter()
        index = pending.next_update
        micro_batches = mini_batches[index]
        rows = slice(micro_batches[0].start, micro_batches[-1].stop)
        pending.mini_batch[rows] = index
        params = self.policy.trainable_parameters()
        grad = accumulate_gradient(
            micro_batches, lambda micro: self._micro_log_probs(rollout.select(micro)), pending.old_log_probs,
            pending.advantages, pending.loss_mask, rollout.response_mask, config.fipo, params,
        )
        pending.parts.extend(grad.metrics)
        pending.log_ratio[rows], pending.weights[rows], pending.future_kl[rows] = \
            grad.log_ratio, grad.weights, grad.future_kl
        pending.in_loss[rows] &= grad.in_loss
        if grad.finite and grad.kept == 0:  # nothing left in the loss: no step, or AdamW would still move weights
            pending.empty += 1
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf"))
            if grad.finite and torch.isfinite(norm):
                self.optimizer.step()
                pending.grad_norms.append(norm.item())
            else:
                pending.skipped += 1
                warnings.warn(f"step {self.step_count + 1}, update {index}: non-finite loss or gradient; "
                              "update skipped, weights untouched", stacklevel=3)
        self.optimizer.zero_grad(set_to_none=True)
        pending.next_update += 1
        pending.times["update_s"] += time.perf_counter() - started
        return pending.next_update >= len(mini_batches)

    def _finish_step(self) -> StepResult:
        pending, config = self._pending, self.config
        batch, rollout = pending.batch, pending.batch.rollout
        started = time.perf_counter()
        step = self.step_count + 1  # becomes the trainer's state only once everything fallible is done
        rewards, group = batch.rewards, config.samples_per_prompt
        groups = rewards.view(-1, group)
        metrics = {
            "step": step,
            "reward/mean": rewards.mean().item(),
            "reward/std": rewards.std().item() if len(rewards) > 1 else 0.0,
            "accuracy/mean": sum(s.correct for s in batch.scored) / len(batch.scored),
            **length_metrics(rollout.response_lengths),
            "response/truncated_frac": sum(r == "length" for r in rollout.finish_reasons) / len(rollout),
            "response/empty_frac": sum(not r.strip() for r in batch.responses) / len(batch.responses),
            "groups/all_equal_frac": (groups.max(dim=1).values == groups.min(dim=1).values).float().mean().item(),
            **phases.summarize(batch.responses),
            **pending.metrics,
            **merge_loss_metrics(pending.parts),
            "update/count": float(pending.next_update),
            "update/skipped": float(pending.skipped),
            "update/empty": float(pending.empty),
            "grad_norm": sum(pending.grad_norms) / len(pending.grad_norms) if pending.grad_norms else 0.0,
            "grad_norm_max": max(pending.grad_norms) if pending.grad_norms else 0.0,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        result = StepResult(
            step=step, metrics=metrics, rollout=rollout, prompts=batch.prompts, responses=batch.responses,
            rewards=rewards, correct=[s.correct for s in batch.scored], advantages=pending.advantages,
            old_log_probs=pending.old_log_probs, weights=pending.weights, future_kl=pending.future_kl,
            log_ratio=pending.log_ratio, mini_batch=pending.mini_batch, in_loss=pending.in_loss,
            problems=batch.problems,
        )
        metrics.update(step_segment_metrics(result, self.policy.tokenizer))  # weight per reasoning segment
        if config.trace_samples:
            self._write_traces(result)
        trace_s = time.perf_counter() - started
        if self.eval_problems and config.eval_every and step % config.eval_every == 0:
            metrics.update(self.evaluate(step=step))
        times = pending.times
        step_s = sum(times.values()) + trace_s
        metrics.update({
            "time/generate_s": times["generate_s"], "time/reward_s": times["reward_s"],
            "time/logprob_s": times["logprob_s"], "time/update_s": times["update_s"], "time/step_s": step_s,
            "tokens_per_s": float(rollout.response_lengths.sum()) / step_s,
        })
        self._log(metrics)
        with warnings.catch_warnings():  # a step whose updates were all skipped still advances the schedule
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.scheduler.step()
        self.step_count = step
        self._pending = None
        if config.save_every > 0 and step % config.save_every == 0:
            self.save()
        return result

    # ------------------------------------------------------------------ traces and evaluation

    def _write_traces(self, result: StepResult) -> None:
        config, tokenizer = self.config, self.policy.tokenizer
        rows = trace.select_rows(result.mini_batch, result.advantages, config.trace_samples,
                                 seed=config.seed * 7919 + result.step)
        post = None
        if config.trace_post_update and rows:
            mask = result.rollout.response_mask[rows]  # [k, R]
            new = self._log_probs(result.rollout, grad=False, rows=rows)  # [k, R] after the last update
            post = future_kl(new - result.old_log_probs[rows], mask, decay_rate=config.fipo.decay_rate,
                             dual_clip=config.fipo.dual_clip, log_ratio_clamp=config.fipo.log_ratio_clamp)
        records = trace.step_records(result, rows, tokenizer, loss=config.fipo.loss, post_update_future_kl=post)
        trace.write_step(self.out_dir, result.step, records)

    def evaluate(self, *, step: int | None = None) -> dict[str, float]:
        """avg@k / pass@k and lengths on the held-out problems, logged under `step` (default: the
        last completed step) in OUT/eval.jsonl."""
        if not self.eval_problems:
            raise ValueError("evaluate: no held-out problems (set TrainConfig.eval_data or pass eval_problems)")
        config = self.config
        step = self.step_count if step is None else step
        started = time.perf_counter()
        metrics = evaluate(
            self.policy, self.eval_problems, self.reward_fn, k=config.eval_k, max_prompt_length=config.max_prompt_length,
            max_new_tokens=config.max_response_length, temperature=config.eval_temperature, top_p=config.eval_top_p,
            top_k=config.top_k, batch_size=config.rollout_batch_size, backend=config.rollout_backend,
            seed=config.seed * 15_485_863 + step,
            reward_errors=config.reward_errors, error_reward=config.reward_incorrect,
        )
        metrics["time/eval_s"] = time.perf_counter() - started
        self.log.append_eval(step, metrics)
        return metrics

    # ------------------------------------------------------------------ loops, logs, checkpoints

    def train(self, steps: int | None = None, *, until: int | None = None, progress: bool = True,
              table: bool = False, callback=None) -> list[dict[str, float]]:
        """Run `steps` more steps (default config.steps), or until step `until`; returns their metrics.

        A tqdm.auto bar works in notebooks and terminals; table=True prints a row per step;
        callback(result) runs after every step. Checkpoints follow `config.save_every`.
        Interrupting stops at a safe point (see `step`); calling train() again continues.
        """
        from tqdm.auto import tqdm

        if until is not None:
            steps = max(until - self.step_count, 0)
        steps = self.config.steps if steps is None else steps
        done = []
        name = "FIPO" if self.config.fipo.loss == "fipo" else self.config.fipo.loss.upper()
        bar = tqdm(total=steps, desc=name, disable=not progress, unit="step")
        if table:
            bar.write(format_table_header())
        try:
            with self.interrupt:
                for _ in range(steps):
                    result = self._step()
                    done.append(result.metrics)
                    bar.update(1)
                    bar.set_postfix(reward=f"{result.metrics['reward/mean']:.2f}",
                                    len=f"{result.metrics['length/mean']:.0f}")
                    if table:
                        bar.write(format_table_row(result.metrics))
                    if callback is not None:
                        callback(result)
                    self.interrupt.check(f"stopped after step {self.step_count}")
            if self.config.save_every >= 0 and steps:
                self.save()
        finally:
            bar.close()
        return done

    def _log(self, metrics: dict[str, float]) -> None:
        self.history.append(metrics)
        self.log.append(metrics)

    def save(self) -> Path:
        """Checkpoint the completed steps to OUT/checkpoints/step-N (atomically); returns the folder."""
        if self._pending is not None:
            raise RuntimeError("save: a step is half done; call step() to finish it first")
        if self._saved_step == self.step_count and checkpoint_dir(self.out_dir, self.step_count).is_dir():
            return checkpoint_dir(self.out_dir, self.step_count)  # nothing changed since
        folder = write_checkpoint(self.out_dir, self.step_count, lambda folder: save_training_state(
            folder, policy=self.policy, optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler,
            step=self.step_count, config=self.config,
        ))
        self._saved_step = self.step_count
        return folder

    def load_checkpoint(self, folder, *, verified: bool = False) -> None:
        """Restore weights, optimizer, scheduler, RNG and data order from a checkpoint folder;
        metrics, evaluations and traces of later steps are dropped (the run continues from there)."""
        self.step_count = load_training_state(folder, policy=self.policy, optimizer=self.optimizer,
                                              scheduler=self.scheduler, sampler=self.sampler, verified=verified)
        self._saved_step = self.step_count
        self._pending = None
        self._clear_run_files(self.step_count)

    @classmethod
    def resume(cls, run_dir, *, fallback: bool = False, config: TrainConfig | None = None,
               checkpoint: Path | None = None, **kwargs) -> "FIPOTrainer":
        """A trainer continuing the newest complete checkpoint of `run_dir` (config from the checkpoint
        unless given). A bad newest checkpoint raises CheckpointError naming the file; fallback=True
        uses the previous complete one instead. `checkpoint`: that folder, already found and verified
        by `checkpoint.latest_checkpoint` (its files are not hashed again)."""
        folder = checkpoint or latest_checkpoint(run_dir, fallback=fallback)
        if folder is None:
            raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}")
        if config is None:
            config = TrainConfig(**json.loads((folder / "config.json").read_text()))
            config.output_dir = str(run_dir)
        trainer = cls(config, _resuming=True, **kwargs)
        trainer.load_checkpoint(folder, verified=True)  # latest_checkpoint has just verified it
        return trainer

    def _clear_run_files(self, step: int) -> None:
        """Drop what the run wrote after `step`; 0 starts a new run here (earlier checkpoints go too)."""
        if step == 0:
            old = list_checkpoints(self.out_dir)
            if old or self.log.metrics_path.exists() and self.log.metrics_path.stat().st_size:
                warnings.warn(f"starting a new run in {self.out_dir}: the earlier run's metrics, traces and "
                              f"{len(old)} checkpoint(s) there are removed", stacklevel=3)
            for _, folder in old:
                shutil.rmtree(folder)
        self.history = self.log.keep_until(step)
        trace.remove_after(self.out_dir, step)


def _target_modules(spec: str):
    return spec if spec == "all-linear" else [m.strip() for m in spec.split(",") if m.strip()]
