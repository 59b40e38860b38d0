"""Trace records as the views see them: what TokenView, PhaseView and the static HTML show of a
traced response, cleaned up from trace rows (fipo_nb.trace.load_traces).

A view record is a plain JSON-able dict: step, sample, mini_batch, reward, advantage, ...,
"tokens" (the decoded piece of every token), "metrics" ({name: [float | None per token]}),
"segments" (the response's reasoning segments as token spans, computed here at read time:
[{"kind", "start", "end", "opening"}], see fipo_nb.phases) and "segment_summary" (per segment
kind, then the tokens that open a verification move: token count, mean weight, mean Future-KL,
computed by analysis.segments as the step's segment/* metrics are).
"""

from __future__ import annotations

import math

from ..analysis import phases, segments

METRICS = ("weight", "future_kl", "post_update_future_kl", "log_ratio", "ratio", "token_advantage", "value")
INFO = ("step", "sample", "problem_id", "mini_batch", "loss", "reward", "advantage", "correct", "answer",
        "finish_reason", "in_loss", "prompt")
SUMMARY_GROUPS = (*phases.SEGMENT_KINDS, segments.OPENING)  # the rows a response's summary can have


def _float(value):
    value = float(value)
    return value if math.isfinite(value) else None


def segment_spans(tokens: list[str]) -> list[dict]:
    """The response's segments as token spans: [{"kind", "start", "end", "opening"}] (see phases.token_spans)."""
    return [{"kind": s.kind, "start": s.start, "end": s.end, "opening": s.opening}
            for s in phases.token_spans(list(tokens))]


def token_groups(record: dict) -> tuple:
    """([L] segment-kind code per token, index into phases.SEGMENT_KINDS; [L] bool: opens a verification move)."""
    return segments.group_codes(record.get("segments") or [], len(record["tokens"]))


def segment_summary(record: dict) -> list[dict]:
    """Per segment kind present (in SEGMENT_KINDS order), then the tokens that open a verification
    move (segments.OPENING): token count, mean weight and mean Future-KL over the record's tokens
    of that group."""
    kinds, opening = token_groups(record)
    tokens = segments.group_tokens(kinds, opening)
    means = {name: segments.group_means(*segments.group_sums(kinds, opening, record["metrics"][name]))
             if name in record["metrics"] else [None] * len(segments.GROUPS) for name in ("weight", "future_kl")}
    rows = []
    for index, group in enumerate(segments.GROUPS):
        if group in SUMMARY_GROUPS and tokens[index]:
            rows.append({"kind": group, "tokens": int(tokens[index]),
                         **{f"{name}_mean": means[name][index] for name in ("weight", "future_kl")}})
    return rows


def with_segments(record: dict) -> dict:
    """The record with "segments" and "segment_summary" (a copy if they had to be added)."""
    if "segments" in record and "segment_summary" in record:
        return record
    record = dict(record)
    record["segments"] = segment_spans(record["tokens"])
    record["segment_summary"] = segment_summary(record)
    return record


def view_record(row) -> dict:
    """A trace row (pandas Series or dict from fipo_nb.trace) -> a view record."""
    get = row.get if hasattr(row, "get") else row.__getitem__
    record = {}
    for key in INFO:
        value = get(key)
        if value is not None and hasattr(value, "item"):
            value = value.item()
        record[key] = value
    record["tokens"] = [str(t) for t in get("tokens")]
    metrics = {}
    for name in METRICS:
        values = get(name)
        if values is not None and not (isinstance(values, float) and math.isnan(values)):
            metrics[name] = [_float(v) for v in values]
    record["metrics"] = metrics
    return with_segments(record)


def view_records(source) -> list[dict]:
    """View records from a load_traces DataFrame, trace rows, view records, or a single one of those."""
    if hasattr(source, "iterrows"):
        return [view_record(row) for _, row in source.iterrows()]
    if isinstance(source, dict):
        source = [source]
    return [with_segments(r) if "metrics" in r else view_record(r) for r in source]


def spread(record: dict, metric: str) -> float:
    """max - min of the record's per-token `metric` (0 when it has none)."""
    values = [v for v in record["metrics"].get(metric) or [] if v is not None]
    return max(values) - min(values) if values else 0.0


def idle(record: dict) -> bool:
    """A response no influence weight acted on: first mini-batch (weights all exactly 1), out of the loss, or
    with advantage 0 (its group all scored alike: weights times 0 move nothing)."""
    return record.get("mini_batch") == 0 or record.get("in_loss") is False or record.get("advantage") == 0


def reweighted_first(records: list[dict]) -> list[dict]:
    """The records in the order the views open them: responses FIPO re-weighted first (a later
    mini-batch, in the loss, a non-zero advantage, the largest spread of weights; then of Future-KL,
    which is all DAPO and GRPO have), newest step first on ties; first-mini-batch responses, whose
    weights are all exactly 1, responses left out of the loss and those with advantage 0 come last,
    still there to pick."""
    def key(record):
        return idle(record), -spread(record, "weight"), -spread(record, "future_kl"), -record["step"], record["sample"]

    return sorted(records, key=key)


def record_note(record: dict, metric: str) -> str:
    """Why a record looks the way it does, when that could look like a bug."""
    if record.get("in_loss") is False and metric in ("weight", "future_kl"):
        return ("This response was left out of the loss (overlong filtering, or FIPO's rule that drops a sequence "
                "with more than one dual-clipped token): its weights and Future-KL were never computed. Its "
                "log-ratio and post_update_future_kl still show how the update moved it.")
    if record.get("mini_batch") == 0 and metric in ("weight", "future_kl", "log_ratio", "ratio"):
        return ("This response was in the first mini-batch of its step: it was scored by the policy that had "
                "sampled it, so its log-ratio and Future-KL are 0 and every weight is exactly 1. FIPO acts from "
                "the second mini-batch on; its post_update_future_kl, when traced, shows how the whole step moved it.")
    moved = [v for v in (record.get("metrics") or {}).get("log_ratio") or [] if v is not None]
    if record.get("mini_batch") and record.get("loss") == "fipo" and moved and not any(moved) and \
            metric in ("weight", "future_kl", "log_ratio", "ratio"):
        return ("The updates before this response's mini-batch did not move the policy (e.g. their groups all "
                "scored alike: advantage 0, nothing to learn), so its log-ratio and Future-KL are 0 and every weight "
                "is exactly 1: FIPO had nothing to re-weight yet.")
    if record.get("advantage") == 0 and metric in ("weight", "token_advantage"):
        return ("Every response of this one's group scored the same, so its advantage is 0: its weights multiply "
                "0 and the update does not move it by its own loss (dynamic sampling drops such groups).")
    if record.get("loss") in ("dapo", "grpo") and metric == "weight":
        return f"{str(record['loss']).upper()} gives every token weight 1; Future-KL is shown for comparison only."
    return ""
