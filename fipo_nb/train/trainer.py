"""FIPOTrainer: the loop around the step, with interrupts, checkpoints and resume.

The step itself, stage by stage, is `step.run_step`. The trainer holds what lives across steps
(policy, optimizer, lr schedule, data order, the run's files) and the step in progress
(`step_in_progress`), so that an interrupt (Ctrl-C, or the notebook's stop button) takes effect
at a safe point, between mini-batches or steps, and the next `step()` / `train()` finishes that
step exactly as if nothing had happened.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ..analysis import traces
from ..analysis.files import write_atomic
from ..config import TrainConfig
from ..data import PromptSampler, config_problems
from ..models import Policy, load_policy, switch_off_dropout
from ..models.critic import Critic
from ..models.lora_forward import lean_lora
from ..models.packing import response_logprobs
from ..rewards import MathReward
from ..rewards.workers import RewardPool
from ..rollout import Rollout, pad_token_id
from .checkpoint import (
    CheckpointError,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
    save_training_state,
    write_checkpoint,
)
from .collect import sample_batch
from .evaluation import evaluate
from .interrupts import SafeInterrupt
from .runlog import (RunLog, format_eval_row, format_table_header, format_table_row, no_signal_note,
                     truncation_note)
from .step import SampledStep, StepProgress, StepResult, run_step

__all__ = ["FIPOTrainer", "SampledStep", "StepProgress", "StepResult"]


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
    The reward function runs in forked worker processes, each call under config.reward_timeout
    (`reward_pool`: config.reward_workers; None scores in this process). They live for one call of
    `train` / `step` / `sample` / `evaluate`: none linger between calls (a forked process holds copies of
    this one's files and pipes), and each call's workers see the reward function's objects as they are then.
    """

    def __init__(self, config: TrainConfig, *, policy: Policy | None = None, problems=None, reward_fn=None,
                 eval_problems=None, _resuming: bool = False):
        self.config = config.validate()
        if config.strategy != "single":
            raise ValueError(
                f"strategy {config.strategy!r} needs the scale-out path: verl runs it, "
                "`fipo-nb launch verl --preset NAME` writes the launch and `fipo-nb plan --preset NAME` its memory plan"
            )
        self.problems = list(problems) if problems is not None else config_problems(config, "train")
        self.eval_problems = eval_problems  # data first: a bad file fails before a model is loaded
        if eval_problems is None and (config.eval_data is not None or config.eval_holdout):  # eval_limit: distinct
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
        self.reward_pool = None if config.reward_workers is None else \
            RewardPool(config.reward_workers, config.reward_timeout)  # forks its workers on first use
        self._calls = 0  # public calls under way (train calls step): the outermost one stops the workers
        gen_prompts = config.gen_prompts_per_batch if config.dynamic_sampling and config.gen_prompts_per_batch else \
            config.prompts_per_step
        self.sampler = PromptSampler(self.problems, gen_prompts, seed=config.seed)
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_multiplier(config))
        self.critic: Critic | None = None  # PPO's value model (advantage_estimator="gae"), on the policy's base
        self.critic_optimizer = None
        if config.advantage_estimator == "gae":
            self.critic = Critic(self.policy, seed=config.seed)
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=config.critic_lr,
                                                      weight_decay=config.weight_decay)
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self._progress: StepProgress | None = None  # the step in progress, if any
        self._saved_step: int | None = None
        self.interrupt = SafeInterrupt()
        self.out_dir = Path(config.output_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.out_dir)
        if not _resuming:
            self._clear_run_files(0)
        write_atomic(self.out_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ one step

    def sample(self) -> SampledStep:
        """Stages 1-4 of the next step (data, rollout, reward, dynamic sampling) without training on
        them; `step(sampled)` trains on them (e.g. each loss on one rollout). Advances the data order
        as a step does."""
        config = self.config
        with self._workers(), lean_lora(self.policy.model):
            batch, metrics, times = sample_batch(
                self.policy, self.sampler, self.reward_fn, config, pad_id=pad_token_id(self.policy.tokenizer),
                seed=config.seed * 1_000_003 + self.step_count * 1_009,  # sampling is reproducible per step
                pool=self.reward_pool,
            )
        return SampledStep(batch, metrics, times)

    def step(self, sampled: SampledStep | None = None) -> StepResult:
        """Run one step (or finish the interrupted one); append its metrics to metrics.jsonl.
        `sampled` (from `sample()`) trains on those rows instead of sampling new ones.

        Ctrl-C / the notebook's stop button takes effect after the current mini-batch: the step
        stays in progress, KeyboardInterrupt is raised, and the next call finishes it.
        """
        if sampled is not None and self._progress is not None:
            raise RuntimeError("step(sampled): a step is half done; call step() to finish it first")
        with self._workers(), self.interrupt, lean_lora(self.policy.model):  # peft's LoRA maths, leaner (bit for bit)
            return self._run(sampled)

    def _run(self, sampled: SampledStep | None = None) -> StepResult:
        if self._progress is None:
            self._progress = StepProgress(sampled=sampled)
        try:
            return run_step(self, self._progress, self.interrupt.check)
        except BaseException:
            if self._progress is not None and self._progress.experience is None:
                self._progress = None  # it failed before sampling was done: the step starts over
            raise

    @property
    def step_in_progress(self) -> StepProgress | None:
        """The step between its sampling and its end (after an interrupt or a failure), else None:
        `step()` finishes it."""
        return self._progress

    def complete_step(self, result: StepResult) -> None:
        """Count a finished step: its metrics to the history and metrics.jsonl, the lr schedule on."""
        self.log.append(result.metrics)  # first: a full disk (WriteError) leaves the step to finish again
        self.history.append(result.metrics)
        with warnings.catch_warnings():  # a step whose updates were all skipped still advances the schedule
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.scheduler.step()
        self.step_count = result.step
        self._progress = None

    def micro_log_probs(self, part: Rollout) -> torch.Tensor:
        """Per-token log-probs [n, R_part] of a micro-batch's rows under the current policy (grad as enabled)."""
        return response_logprobs(
            self.policy.model, part.prompt_ids, part.prompt_mask, part.response_ids, part.response_mask,
            pad_id=pad_token_id(self.policy.tokenizer), temperature=self.config.temperature or 1.0,
            chunk_size=self.config.logprob_chunk_size, pack=self.config.pack_sequences,
            share_prompts=self.config.share_prompts,
        )  # response_logprobs moves the rows to the model

    def close(self) -> None:
        """Stop the reward worker processes (the next scoring starts new ones); calling it twice is fine.
        Each public call stops them as it returns; garbage collection and interpreter exit do too."""
        if self.reward_pool is not None:
            self.reward_pool.close()

    @contextmanager
    def _workers(self):
        """The reward workers' lifetime: the outermost public call."""
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1
            if self._calls == 0:
                self.close()

    def __enter__(self) -> "FIPOTrainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, *, step: int | None = None) -> dict[str, float]:
        """avg@k / pass@k and lengths on the held-out problems, logged under `step` (default: the
        last completed step) in OUT/eval.jsonl."""
        if not self.eval_problems:
            raise ValueError("evaluate: no held-out problems (set TrainConfig.eval_data or pass eval_problems)")
        config = self.config
        step = self.step_count if step is None else step
        started = time.perf_counter()
        with self._workers():
            metrics = evaluate(
                self.policy, self.eval_problems, self.reward_fn, k=config.eval_k,
                max_prompt_length=config.max_prompt_length, max_new_tokens=config.max_response_length,
                temperature=config.eval_temperature, top_p=config.eval_top_p, top_k=config.top_k,
                batch_size=config.rollout_batch_size, backend=config.rollout_backend,
                seed=config.seed * 15_485_863 + step,
                reward_errors=config.reward_errors, error_reward=config.reward_incorrect, pool=self.reward_pool,
            )
        metrics["time/eval_s"] = time.perf_counter() - started
        self.log.append_eval(step, metrics)
        return metrics

    # ------------------------------------------------------------------ loops, logs, checkpoints

    def train(self, steps: int | None = None, *, until: int | None = None, progress: bool = True,
              table: bool = False, callback=None) -> list[dict[str, float]]:
        """Run `steps` more steps (default config.steps), or until step `until`; returns their metrics.

        A text progress bar (tqdm's, on stderr: a notebook shows it as it goes and keeps its last state in the
        saved output, where a widget bar would be saved frozen); table=True prints a row per step;
        callback(result) runs after every step. Checkpoints follow `config.save_every`.
        Interrupting stops at a safe point (see `step`); calling train() again continues.
        """
        from tqdm.std import tqdm

        if until is not None:
            steps = max(until - self.step_count, 0)
        steps = self.config.steps if steps is None else steps
        done = []
        name = self.config.method.upper()
        bar = tqdm(total=steps, desc=name, disable=not progress, unit="step")
        if table:
            bar.write(format_table_header())
        try:
            with self._workers(), self.interrupt:
                for _ in range(steps):
                    result = self._run()
                    done.append(result.metrics)
                    bar.update(1)
                    bar.set_postfix(reward=f"{result.metrics['reward/mean']:.2f}",
                                    len=f"{result.metrics['length/mean']:.0f}")
                    if table:
                        bar.write(format_table_row(result.metrics))
                        if format_eval_row(result.metrics):  # the step ran an evaluation: show it where people look
                            bar.write(format_eval_row(result.metrics))
                    if callback is not None:
                        callback(result)
                    self.interrupt.check(f"stopped after step {self.step_count}")
            if self.config.save_every >= 0 and steps:
                self.save()
        finally:
            bar.close()
        for note in (no_signal_note(done), truncation_note(done, self.config.max_response_length)):
            if note and (progress or table):
                print(note, flush=True)
        return done

    def save(self) -> Path:
        """Checkpoint the completed steps to OUT/checkpoints/step-N (atomically); returns the folder."""
        if self._progress is not None:
            raise RuntimeError("save: a step is half done; call step() to finish it first")
        if self._saved_step == self.step_count and checkpoint_dir(self.out_dir, self.step_count).is_dir():
            return checkpoint_dir(self.out_dir, self.step_count)  # nothing changed since
        folder = write_checkpoint(self.out_dir, self.step_count, lambda folder: save_training_state(
            folder, policy=self.policy, optimizer=self.optimizer, scheduler=self.scheduler, sampler=self.sampler,
            step=self.step_count, config=self.config, critic=self.critic, critic_optimizer=self.critic_optimizer,
        ))
        self._saved_step = self.step_count
        return folder

    def load_checkpoint(self, folder, *, verified: bool = False) -> None:
        """Restore weights, optimizer, scheduler, RNG and data order from a checkpoint folder;
        metrics, evaluations and traces of later steps are dropped (the run continues from there)."""
        self.step_count = load_training_state(folder, policy=self.policy, optimizer=self.optimizer,
                                              scheduler=self.scheduler, sampler=self.sampler, verified=verified,
                                              critic=self.critic, critic_optimizer=self.critic_optimizer)
        self._saved_step = self.step_count
        self._progress = None
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
        traces.remove_after(self.out_dir, step)


def _target_modules(spec: str):
    return spec if spec == "all-linear" else [m.strip() for m in spec.split(",") if m.strip()]
