"""Where inside its responses a step's update acted: influence weight and Future-KL per reasoning segment.

Each response is decoded once (`trace.token_pieces`), cut into segments (`phases.segments`) and
the segments mapped onto its tokens (`phases.token_spans`). Per step:

    segment/<kind>/token_frac       share of the step's response tokens in segments of <kind>
    segment/<kind>/weight_mean      mean influence weight of those tokens that entered the loss
    segment/<kind>/future_kl_mean   mean Future-KL of the same tokens
    segment/verify_open/...         the same three for the tokens that open a verification move
                                    (its cue: "Wait,", "Let me double-check", "Alternatively")
    segment/rest/...                and for every other token

<kind> is planning, working, result, verification or answer. The means cover the tokens of the
responses that entered the loss (not overlong-filtered, not dropped by FIPO's rule), first
mini-batch included (weight 1, Future-KL 0 there), as fipo/weight_mean does; they are left out
of a step without such tokens (no verification at all, say), never written as NaN.
"""

from __future__ import annotations

import numpy as np

from . import phases
from ..models.tokens import token_pieces

OPENING, REST = "verify_open", "rest"
GROUPS = (*phases.SEGMENT_KINDS, OPENING, REST)
_KIND = {kind: code for code, kind in enumerate(phases.SEGMENT_KINDS)}


def panel_keys(statistic: str) -> list[str]:
    """The metric keys of one statistic (token_frac, weight_mean, future_kl_mean) for every group."""
    return [f"segment/{group}/{statistic}" for group in GROUPS]


def token_groups(pieces: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """([L] segment-kind code per token (index into phases.SEGMENT_KINDS), [L] bool: opens a verification move)."""
    kinds = np.zeros(len(pieces), dtype=np.int8)
    opening = np.zeros(len(pieces), dtype=bool)
    for span in phases.token_spans(pieces):
        kinds[span.start:span.end] = _KIND[span.kind]
        opening[span.start:span.opening] = True
    return kinds, opening


def segment_metrics(rows) -> dict[str, float]:
    """The step's segment metrics from rows of (token pieces, weights [L], Future-KL [L], in the loss)."""
    n_groups = len(GROUPS)
    tokens = np.zeros(n_groups)  # every response token
    counted = np.zeros(n_groups)  # tokens in the loss
    weight_sum = np.zeros(n_groups)
    future_kl_sum = np.zeros(n_groups)
    for pieces, weights, future_kl, in_loss in rows:
        kinds, opening = token_groups(pieces)
        for codes in (kinds, np.where(opening, GROUPS.index(OPENING), GROUPS.index(REST))):
            tokens += np.bincount(codes, minlength=n_groups)
            if in_loss:
                counted += np.bincount(codes, minlength=n_groups)
                weight_sum += np.bincount(codes, weights=np.asarray(weights, dtype=np.float64), minlength=n_groups)
                future_kl_sum += np.bincount(codes, weights=np.asarray(future_kl, dtype=np.float64), minlength=n_groups)
    total = tokens[: len(phases.SEGMENT_KINDS)].sum()
    metrics = {}
    for index, group in enumerate(GROUPS):
        metrics[f"segment/{group}/token_frac"] = float(tokens[index] / total) if total else 0.0
        if counted[index]:
            metrics[f"segment/{group}/weight_mean"] = float(weight_sum[index] / counted[index])
            metrics[f"segment/{group}/future_kl_mean"] = float(future_kl_sum[index] / counted[index])
    return metrics


def step_segment_metrics(result, tokenizer) -> dict[str, float]:
    """segment_metrics of every response of a trainer StepResult (each decoded once)."""
    lengths = result.rollout.response_lengths.tolist()
    ids = result.rollout.response_ids
    weights, future_kl = result.weights.numpy(), result.future_kl.numpy()  # [N, R]
    in_loss = result.in_loss.tolist()
    return segment_metrics(
        (token_pieces(tokenizer, ids[row, :length].tolist()), weights[row, :length], future_kl[row, :length],
         in_loss[row])
        for row, length in enumerate(lengths)
    )
