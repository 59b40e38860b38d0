"""The part of the verl integration that runs inside verl's workers (imports verl at import time).

    actor_rollout_ref.model.external_lib=fipo_nb.integrations.verl

makes every worker import `fipo_nb.integrations.verl`, which imports this module when verl is
loaded. Importing it:

* registers the policy loss "fipo_nb" (`verl.trainer.ppo.core_algos.register_policy_loss`):
  `fipo_nb.core.policy_loss` under verl's global normalisation. verl hands the loss one
  micro-batch at a time with `config.global_batch_info` = {dp_size, batch_num_tokens,
  global_batch_size}; FSDP averages gradients over data-parallel ranks and the engine calls
  backward() per micro-batch, so the micro-batch loss is `sum / batch_num_tokens * dp_size`
  ("token-mean", for "fipo" and "dapo") or `sum of sequence means / global_batch_size * dp_size`
  ("seq-mean-token-mean", for "grpo"): summed over micro-batches and ranks it is exactly the
  whole mini-batch's mean. verl's `batch_num_tokens` counts every response token of the
  mini-batch, sequences removed by FIPO's drop rule included (the official fork divides by the
  kept tokens): a plugin inside verl inherits verl's count.
* defines `FIPOPolicyLossConfig`, verl's `PolicyLossConfig` with FIPO's typed fields, selected
  with `actor_rollout_ref.actor.policy_loss._target_`;
* wraps the actor's loss (`verl.workers.utils.losses.ppo_loss`, which the worker binds when it
  builds the actor) so that rank 0 writes fipo_nb traces: the data verl gives that function holds
  the prompt and response token ids, the old log-probs and the advantages of each micro-batch.
  Nothing is written unless `policy_loss.trace_dir` is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from verl.trainer.ppo import core_algos
from verl.workers.config import PolicyLossConfig

from ..config import FIPOConfig
from ..core import policy_loss
from ..trace import token_pieces
from ..update import merge_loss_metrics
from .verl_fields import AGGREGATION

LOSS_NAME = "fipo_nb"
PHASE_SAMPLE = 64  # responses per step whose reasoning phase goes into metrics.jsonl
# fipo_nb metric -> verl's name (the trainer prefixes "actor/" to whatever lacks it)
VERL_NAMES = {"policy/clip_frac": "actor/pg_clipfrac", "policy/dual_clip_frac": "actor/pg_clipfrac_lower",
              "policy/approx_kl": "actor/ppo_kl"}


@dataclass
class FIPOPolicyLossConfig(PolicyLossConfig):
    """verl's policy-loss settings plus FIPO's. The clip range and dual clip c are the actor's own
    `clip_ratio_low`, `clip_ratio_high` and `clip_ratio_c`, so verl's losses and this one read the
    same numbers; the fields below are fipo_nb.FIPOConfig's others."""

    fipo_loss: str = "fipo"
    """FIPOConfig.loss: "fipo", "dapo" (weights 1) or "grpo" (symmetric clip, sequence mean)."""
    dual_clip: bool = True
    """Use the dual clip c = actor.clip_ratio_c (and Future-KL's participation mask); False: neither."""
    decay_rate: float = 32.0
    """tau, the Future-KL half-life in tokens."""
    weight_clip: Optional[float] = 0.2
    """eps_f: influence weights in [1, 1 + eps_f] (high-only) or [1 - eps_f, 1 + eps_f]; 0 / None: cap at 10."""
    weight_clip_high_only: bool = True
    """True: [1, 1 + eps_f] (the 32B recipe); False: two-sided (the 7B pilot)."""
    safety_threshold: Optional[float] = 10.0
    """Weights of negative-advantage tokens with ratio above this are held in [0.8, 1.0]; None: off."""
    drop_dual_clipped_sequences: Optional[bool] = None
    """Leave out sequences with more than one dual-clipped negative token; None: on for "fipo" only."""
    log_ratio_clamp: float = 20.0
    """|log pi - log pi_old| is clamped here before exp."""
    trace_dir: Optional[str] = None
    """Run directory: rank 0 writes TRACE_DIR/traces/step-N.parquet and TRACE_DIR/metrics.jsonl; None: off."""
    trace_samples: int = 4
    """Responses traced per step (chosen over mini-batches and advantage signs, as fipo_nb's trainer does)."""

    def fipo_config(self, actor_config) -> FIPOConfig:
        """The FIPOConfig these settings and the actor's clip settings describe (validated)."""
        return FIPOConfig(
            loss=self.fipo_loss, clip_low=float(actor_config.clip_ratio_low),
            clip_high=float(actor_config.clip_ratio_high),
            dual_clip=float(actor_config.clip_ratio_c) if self.dual_clip else None, decay_rate=self.decay_rate,
            weight_clip=self.weight_clip, weight_clip_high_only=self.weight_clip_high_only,
            safety_threshold=self.safety_threshold, drop_dual_clipped_sequences=self.drop_dual_clipped_sequences,
            log_ratio_clamp=self.log_ratio_clamp,
        ).validate()


def fipo_config_of(actor_config) -> FIPOConfig:
    """FIPOConfig from a verl ActorConfig whose policy_loss is a FIPOPolicyLossConfig."""
    settings = actor_config.policy_loss
    if not isinstance(settings, FIPOPolicyLossConfig):
        raise ValueError("the fipo_nb loss needs actor_rollout_ref.actor.policy_loss._target_="
                         "fipo_nb.integrations.verl.FIPOPolicyLossConfig (it carries FIPO's settings); got "
                         f"{type(settings).__name__}")
    return settings.fipo_config(actor_config)


@core_algos.register_policy_loss(LOSS_NAME)
def fipo_nb_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                        rollout_is_weights=None):
    """verl policy loss "fipo_nb": fipo_nb.core.policy_loss on one micro-batch, globally normalised.

    Tensors are padded [bs, T] (advantages per token, response_mask bool); returns (loss, metrics)
    with metrics under verl's actor/ names.
    """
    fipo = fipo_config_of(config)
    if loss_agg_mode != AGGREGATION[fipo.loss]:
        raise ValueError(f"the fipo_nb loss with fipo_loss={fipo.loss!r} aggregates as "
                         f"actor.loss_agg_mode={AGGREGATION[fipo.loss]!r}; got {loss_agg_mode!r}")
    if rollout_is_weights is not None:
        raise ValueError("the fipo_nb loss does not apply rollout importance-sampling weights "
                         "(algorithm.rollout_correction.rollout_is): leave them off")
    info = config.global_batch_info
    dp_size = int(info.get("dp_size") or 1)
    out = policy_loss(log_prob, old_log_prob, advantages, response_mask, fipo,
                      num_tokens=info.get("batch_num_tokens"), num_sequences=info.get("global_batch_size"))
    return out.loss * dp_size, verl_metrics(out.metrics)


def verl_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """fipo_nb's metric names under verl's: its own names where verl has one, else actor/<fipo_nb name>."""
    return {VERL_NAMES.get(key, f"actor/{key}"): value for key, value in metrics.items()}


# ---------------------------------------------------------------- traces from inside verl's actor


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def _non_tensor(data, key, default=None):
    from verl.utils import tensordict_utils as tu

    try:
        return tu.get_non_tensor_data(data=data, key=key, default=default)
    except (KeyError, AttributeError):
        return default


def _rows(tensor) -> list[torch.Tensor]:
    """Per-row 1-D tensors of a nested (jagged) or padded [B, T] tensor."""
    return list(tensor.unbind()) if tensor.is_nested else list(tensor)


class TraceHook:
    """Follows the micro-batches rank 0's actor trains on and writes fipo_nb's trace format.

    Step and mini-batch boundaries come from verl's own data: every mini-batch holds
    global_batch_size / dp_size rows on each rank, and the last mini-batch of a step carries
    update_lr_scheduler=True. The step number is verl's `global_steps` when the data carries it,
    else counted on from the newest step already in TRACE_DIR.
    """

    def __init__(self):
        self.run_dir = None
        self.tokenizer = None
        self.step = 1
        self.mini_batch = 0
        self.rows_in_mini = 0
        self.rows_in_step = 0
        self._reset_step()

    def _reset_step(self):
        self.candidates = []  # trace records of rows that may be traced this step
        self.lengths, self.rewards, self.texts = [], [], []
        self.loss_metrics = []  # policy_loss's metrics of each micro-batch, merged as fipo_nb's trainer merges them

    def _open(self, run_dir: str):
        from ..trace import trace_steps

        if self.run_dir != run_dir:
            self.run_dir = run_dir
            done = trace_steps(run_dir) if Path(run_dir, "traces").exists() else []
            self.step = (done[-1] + 1) if done else 1

    def observe(self, config, model_output, data) -> None:
        """Record what one micro-batch went through (call after verl's ppo_loss on it)."""
        settings = config.policy_loss
        if not isinstance(settings, FIPOPolicyLossConfig) or not settings.trace_dir or _rank() != 0:
            return
        from verl.workers.utils.padding import no_padding_2_padding

        self._open(settings.trace_dir)
        step = _non_tensor(data, "global_steps")
        if isinstance(step, int) and step > 0:
            self.step = step
        fipo = settings.fipo_config(config)
        with torch.no_grad():
            log_prob = no_padding_2_padding(model_output["log_probs"], data).detach().float()  # [B, T]
            padded = data.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
            mask = padded["response_mask"].bool()  # [B, T]
            old, adv = padded["old_log_probs"].float(), padded["advantages"].float()  # [B, T]
            out = policy_loss(log_prob, old, adv, mask, fipo)
            delta = torch.where(mask, (log_prob - old).clamp(-fipo.log_ratio_clamp, fipo.log_ratio_clamp), 0.0)
        self._collect(config, data, settings, fipo, mask, adv, delta, out)
        rows = mask.shape[0]
        per_rank = max(1, int(data["global_batch_size"]) // max(1, int(data["dp_size"])))
        self.rows_in_mini += rows
        self.rows_in_step += rows
        if self.rows_in_mini >= per_rank:  # the mini-batch is complete on this rank
            self.rows_in_mini = 0
            if bool(_non_tensor(data, "update_lr_scheduler", False)):
                self.finish_step(settings.trace_samples)
            else:
                self.mini_batch += 1

    def _collect(self, config, data, settings, fipo, mask, adv, delta, out):
        tokenizer = getattr(getattr(config, "model_config", None), "tokenizer", None)
        prompts, responses = _rows(data["prompts"]), _rows(data["responses"])
        reward_key = next((k for k in ("token_level_rewards", "token_level_scores", "rm_scores") if k in data), None)
        rewards = None
        if reward_key is not None:
            rewards = data.select(reward_key).to_padded_tensor()[reward_key].float().sum(-1)  # [B]
        lengths = mask.sum(dim=1)  # [B]
        self.loss_metrics.append(out.metrics)
        kept = out.token_mask.any(dim=1)  # [B]
        limit = _non_tensor(data, "max_response_len", -1)
        for i in range(mask.shape[0]):
            length = int(lengths[i])
            self.lengths.append(length)
            reward = float(rewards[i]) if rewards is not None else None
            if reward is not None:
                self.rewards.append(reward)
            advantage = float(adv[i][mask[i]].mean()) if length else 0.0
            bucket = (self.mini_batch, 0 if advantage > 0 else 1 if advantage < 0 else 2)
            candidate = sum(c["_bucket"] == bucket for c in self.candidates) < settings.trace_samples
            if not candidate and len(self.texts) >= PHASE_SAMPLE:
                continue
            if tokenizer is None:
                raise ValueError("fipo_nb traces need the actor's tokenizer (config.model_config.tokenizer)")
            ids = responses[i][:length].tolist()
            if len(self.texts) < PHASE_SAMPLE:  # a plain decode: phases read text, not token pieces
                self.texts.append(tokenizer.decode(ids, skip_special_tokens=True))
            if not candidate:
                continue
            self.candidates.append({  # token pieces are decoded at the end of the step, for the chosen rows only
                "_bucket": bucket, "_prompt_ids": prompts[i].tolist(), "step": self.step,
                "sample": self.rows_in_step + i, "problem_id": "", "mini_batch": self.mini_batch, "loss": fipo.loss,
                "answer": "", "reward": reward, "advantage": advantage,  # the ground truth is not in the actor's data
                "correct": None if reward is None else reward > 0,
                "finish_reason": "length" if length >= limit > 0 else "stop",
                "in_loss": bool(kept[i]), "token_ids": ids,
                "log_ratio": delta[i, :length].tolist(), "ratio": torch.exp(delta[i, :length]).tolist(),
                "future_kl": out.future_kl[i, :length].tolist(), "weight": out.weights[i, :length].tolist(),
                "post_update_future_kl": None,
            })
        self.tokenizer = tokenizer

    def finish_step(self, count: int) -> None:
        """Write the step's traces and its metrics row, then start the next step."""
        from .. import phases
        from ..runlog import RunLog
        from ..trace import select_rows, write_step

        if self.candidates:
            chosen = select_rows(torch.tensor([c["mini_batch"] for c in self.candidates]),
                                 torch.tensor([c["advantage"] for c in self.candidates]), count, seed=self.step)
            records = []
            for i in chosen:
                record = {k: v for k, v in self.candidates[i].items() if not k.startswith("_")}
                record["tokens"] = token_pieces(self.tokenizer, record["token_ids"])
                record["response"] = "".join(record["tokens"])
                record["prompt"] = self.tokenizer.decode(self.candidates[i]["_prompt_ids"], skip_special_tokens=True)
                records.append(record)
            write_step(self.run_dir, self.step, records)
        RunLog(self.run_dir).append(self.step_metrics(phases))
        self.step += 1
        self.mini_batch = 0
        self.rows_in_step = 0
        self._reset_step()

    def step_metrics(self, phases) -> dict[str, float]:
        """One metrics.jsonl row from rank 0's share of the step (verl logs the whole batch itself)."""
        lengths = sorted(self.lengths)
        row: dict[str, float] = {"step": self.step, "verl/rank0_sequences": float(len(lengths))}
        if lengths:
            def quantile(q):
                return float(lengths[min(len(lengths) - 1, int(math.floor(q * (len(lengths) - 1) + 0.5)))])

            row.update({"length/mean": sum(lengths) / len(lengths), "length/min": float(lengths[0]),
                        "length/q25": quantile(0.25), "length/median": quantile(0.5), "length/q75": quantile(0.75),
                        "length/max": float(lengths[-1])})
        if self.rewards:
            row["reward/mean"] = sum(self.rewards) / len(self.rewards)
            row["accuracy/mean"] = sum(r > 0 for r in self.rewards) / len(self.rewards)
        if self.texts:
            row.update(phases.summarize(self.texts))
        row.update(merge_loss_metrics(self.loss_metrics))
        return row


HOOK = TraceHook()
_verl_ppo_loss = None


def traced_ppo_loss(config, model_output, data, dp_group=None):
    """verl's ppo_loss, then the trace hook on what it saw (rank 0, when policy_loss.trace_dir is set)."""
    result = _verl_ppo_loss(config, model_output, data, dp_group=dp_group)
    HOOK.observe(config, model_output, data)
    return result


def install_trace_hook() -> None:
    """Make verl's actor workers use `traced_ppo_loss` (idempotent).

    ActorRolloutRefWorker.init_model binds `verl.workers.engine_workers.ppo_loss` as the actor's
    loss after it has imported `external_lib`; replacing that name is the one hook verl offers
    without a custom worker class.
    """
    global _verl_ppo_loss
    from verl.workers import engine_workers
    from verl.workers.utils import losses

    if _verl_ppo_loss is None:
        _verl_ppo_loss = losses.ppo_loss
    engine_workers.ppo_loss = traced_ppo_loss


install_trace_hook()

