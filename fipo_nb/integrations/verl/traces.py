"""fipo_nb traces from inside verl's actor (imports verl): rank 0 follows the micro-batches it
trains on and writes fipo_nb's trace format and a metrics row per step.

`install_trace_hook` wraps the actor's loss (`verl.workers.utils.losses.ppo_loss`, which the
worker binds when it builds the actor): the data verl gives that function holds the prompt and
response token ids, the old log-probs and the advantages of each micro-batch. Nothing is written
unless `policy_loss.trace_dir` is set.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...core import policy_loss
from ...models.tokens import token_pieces
from ...train.metrics import length_metrics, merge_loss_metrics
from .loss import FIPOPolicyLossConfig

PHASE_SAMPLE = 64  # responses per step whose reasoning phase goes into metrics.jsonl



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
        self.candidates = []  # rows that may be traced this step: {"bucket", "prompt_ids", "fields"}
        self.lengths, self.rewards, self.texts = [], [], []
        self.loss_metrics = []  # policy_loss's metrics of each micro-batch, merged as fipo_nb's trainer merges them

    def _open(self, run_dir: str):
        from ...analysis.traces import trace_steps

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
            candidate = sum(c["bucket"] == bucket for c in self.candidates) < settings.trace_samples
            if not candidate and len(self.texts) >= PHASE_SAMPLE:
                continue
            if tokenizer is None:
                raise ValueError("fipo_nb traces need the actor's tokenizer (config.model_config.tokenizer)")
            ids = responses[i][:length].tolist()
            if len(self.texts) < PHASE_SAMPLE:  # a plain decode: phases read text, not token pieces
                self.texts.append(tokenizer.decode(ids, skip_special_tokens=True))
            if not candidate:
                continue
            # trace_record's fields, kept on the device; the token pieces and the prompt are decoded at the
            # end of the step, for the chosen rows only. The ground truth is not in the actor's data.
            fields = {"step": self.step, "sample": self.rows_in_step + i, "mini_batch": self.mini_batch,
                      "loss": fipo.loss, "reward": reward, "advantage": advantage,
                      "correct": None if reward is None else reward > 0,
                      "finish_reason": "length" if length >= limit > 0 else "stop", "in_loss": bool(kept[i]),
                      "token_ids": ids, "log_ratio": delta[i, :length].clone(),  # [L] each
                      "future_kl": out.future_kl[i, :length].clone(), "weight": out.weights[i, :length].clone()}
            self.candidates.append({"bucket": bucket, "prompt_ids": prompts[i].tolist(), "fields": fields})
        self.tokenizer = tokenizer

    def finish_step(self, count: int) -> None:
        """Write the step's traces and its metrics row, then start the next step."""
        from ...analysis import phases
        from ...analysis.traces import select_rows, trace_record, write_step
        from ...train.runlog import RunLog

        if self.candidates:
            fields = [c["fields"] for c in self.candidates]
            chosen = select_rows(torch.tensor([f["mini_batch"] for f in fields]),
                                 torch.tensor([f["advantage"] for f in fields]), count, seed=self.step)
            records = []
            for i in chosen:
                prompt = self.tokenizer.decode(self.candidates[i]["prompt_ids"], skip_special_tokens=True)
                tokens = token_pieces(self.tokenizer, fields[i]["token_ids"])
                records.append(trace_record(**fields[i], tokens=tokens, prompt=prompt))
            write_step(self.run_dir, self.step, records)
        RunLog(self.run_dir).append(self.step_metrics(phases))
        self.step += 1
        self.mini_batch = 0
        self.rows_in_step = 0
        self._reset_step()

    def step_metrics(self, phases) -> dict[str, float]:
        """One metrics.jsonl row from rank 0's share of the step (verl logs the whole batch itself)."""
        row: dict[str, float] = {"step": self.step, "verl/rank0_sequences": float(len(self.lengths))}
        if self.lengths:  # the trainer's own quantiles: a verl run and a single-device run report the same
            row.update(length_metrics(torch.tensor(self.lengths)))
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

