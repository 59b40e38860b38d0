"""Where inside its responses a step's update acted: influence weight and Future-KL per reasoning segment.

Each response is decoded once (`models.tokens.token_pieces`), cut into segments (`phases.segments`) and
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

The per-token groups (`group_codes`) and the per-group counts and means (`group_tokens`,
`group_sums`, `group_means`) are also what the views show for one response (its segment summary
in fipo_nb.views.records), so a response's table and a step's metrics are one computation.
"""

from __future__ import annotations

import numpy as np

from . import phases
from ..models.tokens import token_pieces

OPENING, REST = "verify_open", "rest"  # the one name of each group, in metric keys and in every view
GROUPS = (*phases.SEGMENT_KINDS, OPENING, REST)
_KIND = {kind: code for code, kind in enumerate(phases.SEGMENT_KINDS)}
_UNCOVERED = _KIND["working"]  # a token no span covers (none, when the spans come from phases.token_spans)


def panel_keys(statistic: str) -> list[str]:
    """The metric keys of one statistic (token_frac, weight_mean, future_kl_mean) for every group."""
    return [f"segment/{group}/{statistic}" for group in GROUPS]


def group_codes(spans, length: int) -> tuple[np.ndarray, np.ndarray]:
    """([L] segment-kind code per token (index into phases.SEGMENT_KINDS), [L] bool: opens a verification
    move) of a response's token spans: phases.TokenSpan, or their dicts in a view record."""
    kinds = np.full(length, _UNCOVERED, dtype=np.int8)
    opening = np.zeros(length, dtype=bool)
    for span in spans:
        start, end, kind, opens = ((span["start"], span["end"], span["kind"], span["opening"]) if isinstance(span, dict)
                                   else (span.start, span.end, span.kind, span.opening))
        kinds[start:end] = _KIND[kind]
        opening[start:opens] = True
    return kinds, opening


def token_groups(pieces: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """group_codes of a response's token pieces (its segments found here)."""
    return group_codes(phases.token_spans(pieces), len(pieces))


def _group_indices(kinds: np.ndarray, opening: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every token is in two groups: its kind's, and either OPENING's or REST's ([L] index into GROUPS each)."""
    return kinds, np.where(opening, GROUPS.index(OPENING), GROUPS.index(REST))


def group_tokens(kinds: np.ndarray, opening: np.ndarray) -> np.ndarray:
    """[len(GROUPS)] tokens of one response in each group."""
    counts = np.zeros(len(GROUPS))
    for codes in _group_indices(kinds, opening):
        counts += np.bincount(codes, minlength=len(GROUPS))
    return counts


def group_sums(kinds: np.ndarray, opening: np.ndarray, values) -> tuple[np.ndarray, np.ndarray]:
    """([len(GROUPS)] count, [len(GROUPS)] sum) of one response's per-token values in each group.

    A value that is None or not finite (a view record's gap) is left out of both, so a mean is
    the mean of the values there are. Sums run in token order, in float64.
    """
    values = np.asarray(values, dtype=np.float64)  # [L]; None reads NaN
    present = np.isfinite(values)  # [L]
    counts, sums = np.zeros(len(GROUPS)), np.zeros(len(GROUPS))
    for codes in _group_indices(kinds, opening):
        counts += np.bincount(codes[present], minlength=len(GROUPS))
        sums += np.bincount(codes[present], weights=values[present], minlength=len(GROUPS))
    return counts, sums


def group_means(counts: np.ndarray, sums: np.ndarray) -> list[float | None]:
    """sums / counts per group; None where a group has no value."""
    return [float(total / count) if count else None for count, total in zip(counts, sums)]


def segment_metrics(rows) -> dict[str, float]:
    """The step's segment metrics from rows of (token pieces, weights [L], Future-KL [L], in the loss)."""
    tokens = np.zeros(len(GROUPS))  # every response token
    counted = {"weight": np.zeros(len(GROUPS)), "future_kl": np.zeros(len(GROUPS))}  # tokens in the loss
    summed = {"weight": np.zeros(len(GROUPS)), "future_kl": np.zeros(len(GROUPS))}
    for pieces, weights, future_kl, in_loss in rows:
        kinds, opening = token_groups(pieces)
        tokens += group_tokens(kinds, opening)
        if in_loss:
            for name, values in (("weight", weights), ("future_kl", future_kl)):
                count, total = group_sums(kinds, opening, values)
                counted[name] += count
                summed[name] += total
    total = tokens[: len(phases.SEGMENT_KINDS)].sum()
    means = {name: group_means(counted[name], summed[name]) for name in counted}
    metrics = {}
    for index, group in enumerate(GROUPS):
        metrics[f"segment/{group}/token_frac"] = float(tokens[index] / total) if total else 0.0
        for name in ("weight", "future_kl"):
            if means[name][index] is not None:
                metrics[f"segment/{group}/{name}_mean"] = means[name][index]
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
