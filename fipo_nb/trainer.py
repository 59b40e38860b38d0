"""FIPOTrainer: sequences one RL step out of plain functions.

    prompts (data) -> rollout (G samples each) -> rewards -> group advantages
      -> old log-probs: one no-grad pass of the training model (never the sampler's)
      -> for each mini-batch, in order: new log-probs -> core.policy_loss -> backward -> optimizer step
      -> one JSON line of metrics

The first mini-batch of a rollout sees the policy that produced the old log-probs, so its
Future-KL is 0 and FIPO equals DAPO there; FIPO re-weights tokens from the 2nd update on.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import TrainConfig
from .core import group_advantages, policy_loss
from .data import DAPO_INSTRUCTION, PromptSampler, load_problems
from .logprobs import token_logprobs
from .models import Policy, load_policy
from .rewards import MathReward, score_responses
from .rollout import Rollout, format_prompt, generate

_SUMMED = ("policy/tokens", "policy/kept_tokens", "policy/sequences")


@dataclass
class StepResult:
    """What one step produced: its metrics and the rollout's tensors, on the CPU."""

    step: int
    metrics: dict[str, float]
    rollout: Rollout
    prompts: list[str]  # formatted prompt text per row
    responses: list[str]  # decoded response text per row
    rewards: torch.Tensor  # [N]
    correct: list[bool]  # [N]
    advantages: torch.Tensor  # [N]
    old_log_probs: torch.Tensor  # [N, R]
    weights: torch.Tensor  # [N, R] the influence weights each token got in its update
    future_kl: torch.Tensor  # [N, R] Future-KL at the moment of its update
    mini_batch: torch.Tensor  # [N] index of the update that used each row
    problems: list = field(default_factory=list)


def merge_loss_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine policy_loss metrics of micro-batches: token-weighted means, min of mins, max of maxes."""
    if not parts:
        return {}
    tokens = [p["policy/tokens"] for p in parts]
    sequences = [p["policy/sequences"] for p in parts]
    merged = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if key in _SUMMED:
            merged[key] = sum(values)
        elif key.endswith("_min"):
            merged[key] = min(v for v, n in zip(values, tokens) if n) if any(tokens) else 0.0
        elif key.endswith("_max"):
            merged[key] = max(v for v, n in zip(values, tokens) if n) if any(tokens) else 0.0
        else:
            weights = sequences if key == "policy/dropped_seq_frac" else tokens
            total = sum(weights)
            merged[key] = sum(v * w for v, w in zip(values, weights)) / total if total else 0.0
    return merged


def length_metrics(lengths: torch.Tensor) -> dict[str, float]:
    """min / q25 / median / mean / q75 / max of response lengths (tokens), as the paper plots them."""
    values = lengths.double()
    q25, median, q75 = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {
        "length/mean": values.mean().item(), "length/median": median, "length/q25": q25, "length/q75": q75,
        "length/min": values.min().item(), "length/max": values.max().item(),
    }


def _lr_multiplier(config: TrainConfig):
    def multiplier(step: int) -> float:
        if step < config.lr_warmup_steps:
            return (step + 1) / config.lr_warmup_steps
        if config.lr_schedule == "cosine":
            span = max(config.steps - config.lr_warmup_steps, 1)
            progress = min((step - config.lr_warmup_steps) / span, 1.0)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return multiplier


def load_train_problems(config: TrainConfig) -> list:
    instruction = {"dapo": DAPO_INSTRUCTION, "none": None}.get(config.instruction, config.instruction)
    return load_problems(config.data, limit=config.data_limit, instruction=instruction, seed=config.seed)


class FIPOTrainer:
    """FIPO (or DAPO / GRPO, by `config.fipo.loss`) training, one `step()` at a time.

    policy / problems / reward_fn default to what `config` names; pass them to use your own
    (a `models.Policy`, a list of `data.Problem`, any callable (prompt, response, sample) -> float).
    """

    def __init__(self, config: TrainConfig, *, policy: Policy | None = None, problems=None, reward_fn=None):
        self.config = config.validate()
        if config.strategy != "single":
            raise ValueError(
                f"strategy {config.strategy!r} needs the scale-out path (multi-GPU FSDP2 / verl), which this "
                "release does not have yet; `fipo-nb train --preset NAME --print-config` shows the resolved setup"
            )
        torch.manual_seed(config.seed)
        self.policy = policy or load_policy(
            config.model, config.mode, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
            target_modules=_target_modules(config.lora_target_modules), dtype=config.dtype, device=config.device,
            gradient_checkpointing=config.gradient_checkpointing, seed=config.seed,
        )
        self.problems = list(problems) if problems is not None else load_train_problems(config)
        self.reward_fn = reward_fn or MathReward(
            correct=config.reward_correct, incorrect=config.reward_incorrect, mode=config.answer_mode
        )
        self.sampler = PromptSampler(self.problems, config.prompts_per_step, seed=config.seed)
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_multiplier(config))
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self.out_dir = Path(config.output_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        self._tensorboard = _tensorboard_writer(self.out_dir)

    # ------------------------------------------------------------------ one step

    def step(self) -> StepResult:
        """Sample, score, and update once per mini-batch; append the metrics to metrics.jsonl."""
        config, policy = self.config, self.policy
        started = time.perf_counter()
        torch.manual_seed(config.seed * 1_000_003 + self.step_count)  # sampling is reproducible per step
        problems = self.sampler.next_batch()
        rollout = generate(
            policy.model, policy.tokenizer, [p.prompt for p in problems], n=config.samples_per_prompt,
            max_prompt_length=config.max_prompt_length, max_new_tokens=config.max_response_length,
            temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
            batch_size=config.rollout_batch_size,
        )
        generated = time.perf_counter()
        group = config.samples_per_prompt
        rows_problems = [p for p in problems for _ in range(group)]
        prompts = [format_prompt(policy.tokenizer, p.prompt) for p in rows_problems]
        responses = [
            policy.tokenizer.decode(ids[mask], skip_special_tokens=True)
            for ids, mask in zip(rollout.response_ids, rollout.response_mask)
        ]
        scored = score_responses(self.reward_fn, prompts, responses, rows_problems)
        rewards = torch.tensor([s.reward for s in scored], dtype=torch.float32)  # [N]
        advantages = group_advantages(rewards, group)  # [N]

        logprob_start = time.perf_counter()
        old_log_probs = self._log_probs(rollout, grad=False)  # [N, R]
        logprob_s = time.perf_counter() - logprob_start

        update_start = time.perf_counter()
        update = self._update(rollout, old_log_probs, advantages)
        update_s = time.perf_counter() - update_start

        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step_count += 1
        step_s = time.perf_counter() - started
        lengths = rollout.response_lengths
        groups = rewards.view(-1, group)
        metrics = {
            "step": self.step_count,
            "reward/mean": rewards.mean().item(),
            "reward/std": rewards.std().item() if len(rewards) > 1 else 0.0,
            "accuracy/mean": sum(s.correct for s in scored) / len(scored),
            **length_metrics(lengths),
            "response/truncated_frac": sum(r == "length" for r in rollout.finish_reasons) / len(rollout),
            "response/empty_frac": sum(not r.strip() for r in responses) / len(responses),
            "prompt/truncated": float(rollout.prompts_truncated),
            "groups/all_equal_frac": (groups.max(dim=1).values == groups.min(dim=1).values).float().mean().item(),
            **update.pop("metrics"),
            "lr": lr,
            "time/generate_s": generated - started,
            "time/logprob_s": logprob_s,
            "time/update_s": update_s,
            "time/step_s": step_s,
            "tokens_per_s": float(lengths.sum()) / step_s,
        }
        if rollout.prompts_truncated:
            warnings.warn(f"step {self.step_count}: {rollout.prompts_truncated} prompt(s) longer than "
                          f"max_prompt_length={config.max_prompt_length} were cut on the left", stacklevel=2)
        self._log(metrics)
        return StepResult(
            step=self.step_count, metrics=metrics, rollout=rollout, prompts=prompts, responses=responses,
            rewards=rewards, correct=[s.correct for s in scored], advantages=advantages,
            old_log_probs=old_log_probs, problems=rows_problems, **update,
        )

    def _micro_batches(self, rows: range) -> list[range]:
        size = self.config.micro_batch_size
        return [range(start, min(start + size, rows.stop)) for start in range(rows.start, rows.stop, size)]

    def _log_probs(self, rollout: Rollout, *, grad: bool, rows: range | None = None) -> torch.Tensor:
        """Per-token log-probs of `rows` ([n, R], 0 at padding), micro-batch by micro-batch."""
        rows = rows if rows is not None else range(len(rollout))
        out = torch.zeros(len(rows), rollout.response_ids.shape[1])
        with torch.set_grad_enabled(grad):
            for micro in self._micro_batches(rows):
                values = self._micro_log_probs(rollout.select(micro))
                out[micro.start - rows.start: micro.stop - rows.start, : values.shape[1]] = values.detach().cpu()
        return out

    def _micro_log_probs(self, part: Rollout) -> torch.Tensor:
        part = part.to(self.policy.device)
        return token_logprobs(
            self.policy.model, part.input_ids(), part.attention_mask(), part.prompt_length,
            temperature=self.config.temperature or 1.0, chunk_size=self.config.logprob_chunk_size,
        )  # [n, R_part]

    def _update(self, rollout: Rollout, old_log_probs: torch.Tensor, advantages: torch.Tensor) -> dict:
        """One optimizer update per mini-batch, in rollout order; returns metrics and per-token weights."""
        config = self.config
        n_rows, width = rollout.response_ids.shape
        rows_per_update = config.mini_batch_size * config.samples_per_prompt
        weights, fkl = torch.ones(n_rows, width), torch.zeros(n_rows, width)
        mini_batch = torch.zeros(n_rows, dtype=torch.long)
        params = self.policy.trainable_parameters()
        parts, grad_norms, skipped = [], [], 0
        for index, start in enumerate(range(0, n_rows, rows_per_update)):
            rows = range(start, min(start + rows_per_update, n_rows))
            mini_batch[start: rows.stop] = index
            num_tokens = int(rollout.response_mask[start: rows.stop].sum())
            self.optimizer.zero_grad(set_to_none=True)
            finite = True
            for micro in self._micro_batches(rows):
                part = rollout.select(micro)
                log_prob = self._micro_log_probs(part)  # [n, r] with grad
                r = log_prob.shape[1]
                out = policy_loss(
                    log_prob, old_log_probs[micro.start: micro.stop, :r].to(log_prob.device),
                    advantages[micro.start: micro.stop].to(log_prob.device), part.response_mask.to(log_prob.device),
                    config.fipo, num_tokens=num_tokens, num_sequences=len(rows),
                )
                if not torch.isfinite(out.loss):
                    finite = False
                    break
                out.loss.backward()
                parts.append(out.metrics)
                weights[micro.start: micro.stop, :r] = out.weights.float().cpu()
                fkl[micro.start: micro.stop, :r] = out.future_kl.float().cpu()
            norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf"))
            if finite and torch.isfinite(norm):
                self.optimizer.step()
                grad_norms.append(norm.item())
            else:
                skipped += 1
                warnings.warn(f"step {self.step_count + 1}, update {index}: non-finite loss or gradient; "
                              "update skipped, weights untouched", stacklevel=3)
            self.optimizer.zero_grad(set_to_none=True)
        metrics = merge_loss_metrics(parts)
        metrics.update({
            "update/count": float(math.ceil(n_rows / rows_per_update)),
            "update/skipped": float(skipped),
            "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else 0.0,
            "grad_norm_max": max(grad_norms) if grad_norms else 0.0,
        })
        return {"metrics": metrics, "weights": weights, "future_kl": fkl, "mini_batch": mini_batch}

    # ------------------------------------------------------------------ loops and logs

    def train(self, steps: int | None = None, *, progress: bool = True, table: bool = False, callback=None):
        """Run `steps` more steps (default: config.steps) with a tqdm.auto bar; returns their metrics.

        table=True prints one row per step; callback(result) runs after every step (e.g. to plot).
        """
        from tqdm.auto import tqdm

        steps = self.config.steps if steps is None else steps
        done = []
        bar = tqdm(total=steps, desc="FIPO" if self.config.fipo.loss == "fipo" else self.config.fipo.loss.upper(),
                   disable=not progress, unit="step")
        if table:
            bar.write(format_table_header())
        try:
            for _ in range(steps):
                result = self.step()
                done.append(result.metrics)
                bar.update(1)
                bar.set_postfix(reward=f"{result.metrics['reward/mean']:.2f}",
                                len=f"{result.metrics['length/mean']:.0f}")
                if table:
                    bar.write(format_table_row(result.metrics))
                if callback is not None:
                    callback(result)
        finally:
            bar.close()
        return done

    def _log(self, metrics: dict[str, float]) -> None:
        self.history.append(metrics)
        with open(self.out_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        if self._tensorboard is not None:
            for key, value in metrics.items():
                if key != "step":
                    self._tensorboard.add_scalar(key, value, metrics["step"])
            self._tensorboard.flush()


_TABLE = [("step", "step", "{:>4.0f}"), ("reward", "reward/mean", "{:>+7.3f}"), ("acc", "accuracy/mean", "{:>5.2f}"),
          ("len", "length/mean", "{:>6.1f}"), ("w_mean", "fipo/weight_mean", "{:>6.3f}"),
          ("w_max", "fipo/weight_max", "{:>6.3f}"), ("fkl", "fipo/future_kl_mean", "{:>+8.4f}"),
          ("clip", "policy/clip_frac", "{:>5.3f}"), ("kl", "policy/approx_kl", "{:>+8.5f}"),
          ("gnorm", "grad_norm", "{:>6.3f}"), ("sec", "time/step_s", "{:>6.1f}")]


def format_table_header() -> str:
    return " ".join(f"{name:>{len(fmt.format(0.0))}}" for name, _, fmt in _TABLE)


def format_table_row(metrics: dict[str, float]) -> str:
    return " ".join(fmt.format(metrics.get(key, float("nan"))) for _, key, fmt in _TABLE)


def _target_modules(spec: str):
    return spec if spec == "all-linear" else [m.strip() for m in spec.split(",") if m.strip()]


def _tensorboard_writer(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: JSON lines only
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))
