"""A step's numbers: one place for each way fipo_nb summarises them, shared by the trainer and the engines.

    length_metrics       min / q25 / median / mean / q75 / max of response lengths (the paper's plot),
                         interpolated quantiles: the trainer, evaluation and verl runs report the same
    merge_loss_metrics   policy_loss metrics of micro-batches (or ranks) -> one row
    rollout_metrics      what a step sampled: reward, accuracy, lengths, truncation, groups, phases
"""

from __future__ import annotations

import torch

from ..analysis import phases

__all__ = ["length_metrics", "merge_loss_metrics", "rollout_metrics"]

_SUMMED = ("policy/tokens", "policy/kept_tokens", "policy/sequences")


def length_metrics(lengths: torch.Tensor, prefix: str = "length") -> dict[str, float]:
    """min / q25 / median / mean / q75 / max of response lengths (tokens), as the paper plots them."""
    values = lengths.double()
    q25, median, q75 = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {
        f"{prefix}/mean": values.mean().item(), f"{prefix}/median": median, f"{prefix}/q25": q25,
        f"{prefix}/q75": q75, f"{prefix}/min": values.min().item(), f"{prefix}/max": values.max().item(),
    }


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


def rollout_metrics(batch, group_size: int) -> dict[str, float]:
    """What a step's batch holds: reward, accuracy, lengths, truncation and empty responses, groups
    whose rewards are all equal, and the share of each reasoning phase."""
    rollout, rewards = batch.rollout, batch.rewards
    groups = rewards.view(-1, group_size)  # [N/G, G]
    return {
        "reward/mean": rewards.mean().item(),
        "reward/std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "accuracy/mean": sum(s.correct for s in batch.scored) / len(batch.scored),
        **length_metrics(rollout.response_lengths),
        "response/truncated": float(sum(r == "length" for r in rollout.finish_reasons)),  # ran out of tokens
        "response/truncated_frac": sum(r == "length" for r in rollout.finish_reasons) / len(rollout),
        "response/empty_frac": sum(not r.strip() for r in batch.responses) / len(batch.responses),
        "groups/all_equal_frac": (groups.max(dim=1).values == groups.min(dim=1).values).float().mean().item(),
        **phases.summarize(batch.responses),
    }
