"""Trace records as the views see them, and their static, self-contained HTML.

A view record is a plain JSON-able dict: step, sample, mini_batch, reward, advantage, ...,
"tokens" (the decoded piece of every token), "metrics" ({name: [float | None per token]}),
"segments" (the response's reasoning segments as token spans, computed here at read time:
[{"kind", "start", "end", "opening"}], see fipo_nb.phases) and "segment_summary" (per segment
kind: token count, mean weight, mean Future-KL).
The colour scale here is the one token_view.js uses, so the static fallback and the live
widget agree: diverging around the metric's neutral value (1 for weights and ratios, 0 for
the others), scaled by the record's largest deviation, with a contrast exponent `gamma`.
"""

from __future__ import annotations

import html
import math

from ..analysis import phases

METRICS = ("weight", "future_kl", "post_update_future_kl", "log_ratio", "ratio")
NEUTRAL = {"weight": 1.0, "ratio": 1.0}
POSITIVE, NEGATIVE = (214, 39, 40), (31, 119, 180)  # red above neutral, blue below
INFO = ("step", "sample", "problem_id", "mini_batch", "loss", "reward", "advantage", "correct", "answer",
        "finish_reason", "in_loss", "prompt")
# one colour per segment kind, away from the red/blue of the metric scale (tokens.js has the same)
SEGMENT_COLOURS = {"planning": "#9e9e9e", "working": "#4daf4a", "result": "#984ea3", "verification": "#ff7f00",
                   "answer": "#1a1a1a"}
CUE = "verification cue"  # the summary's row for the tokens that open a verification move

STYLE = """<style>
.fipo-static{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;line-height:1.7;margin:.6em 0}
.fipo-static .fipo-text{white-space:pre-wrap;word-break:break-word;border:1px solid #ddd;padding:.5em;max-height:32em;overflow:auto}
.fipo-static .fipo-tok{border-radius:2px}
.fipo-static .fipo-nl::before{content:"\\21B5";opacity:.35}
.fipo-static .fipo-head{font-family:system-ui,sans-serif;font-size:12px;color:#444}
.fipo-static .fipo-note{font-family:system-ui,sans-serif;font-size:12px;background:#fff8e1;padding:.3em .5em}
.fipo-static .fipo-seg-legend,.fipo-static .fipo-bands,.fipo-static .fipo-seg-table{font-family:system-ui,sans-serif;font-size:11px;color:#444}
.fipo-static .fipo-swatch{display:inline-block;width:14px;height:6px;margin:0 3px 0 8px;vertical-align:middle}
.fipo-static .fipo-bands{margin:.3em 0}
.fipo-static .fipo-band{display:flex;align-items:center;height:10px;margin:1px 0}
.fipo-static .fipo-band-label{width:80px;font-size:10px;line-height:10px}
.fipo-static .fipo-band-track{position:relative;flex:1;height:8px;background:#f3f3f3}
.fipo-static .fipo-band-seg{position:absolute;top:0;height:8px;min-width:2px;border-left:1px solid #fff;box-sizing:border-box}
.fipo-static .fipo-seg-table{border-collapse:collapse;margin:.3em 0}
.fipo-static .fipo-seg-table td,.fipo-static .fipo-seg-table th{border:1px solid #ddd;padding:1px 6px;text-align:right}
""" + "".join(f".fipo-static .fipo-seg-{k}{{box-shadow:inset 0 -3px 0 {c}}}\n" for k, c in SEGMENT_COLOURS.items()) + \
    ".fipo-static .fipo-cue{box-shadow:inset 0 -5px 0 #ff7f00}\n</style>"


def _float(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def segment_spans(tokens: list[str]) -> list[dict]:
    """The response's segments as token spans: [{"kind", "start", "end", "opening"}] (see phases.token_spans)."""
    return [{"kind": s.kind, "start": s.start, "end": s.end, "opening": s.opening}
            for s in phases.token_spans(list(tokens))]


def segment_summary(record: dict) -> list[dict]:
    """Per segment kind present (in SEGMENT_KINDS order), then the verification cues: token count,
    mean weight and mean Future-KL over the record's tokens of that kind."""
    metrics = record["metrics"]
    groups: dict[str, list[int]] = {}
    for span in record["segments"]:
        groups.setdefault(span["kind"], []).extend(range(span["start"], span["end"]))
        if span["opening"] > span["start"]:
            groups.setdefault(CUE, []).extend(range(span["start"], span["opening"]))
    rows = []
    for kind in (*phases.SEGMENT_KINDS, CUE):
        if kind in groups:
            index = groups[kind]
            rows.append({"kind": kind, "tokens": len(index), **{
                f"{name}_mean": _mean([metrics[name][i] for i in index]) if name in metrics else None
                for name in ("weight", "future_kl")}})
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


def neutral_of(metric: str) -> float:
    return NEUTRAL.get(metric, 0.0)


def scale_of(values, neutral: float) -> float:
    deviations = [abs(v - neutral) for v in values if v is not None]
    largest = max(deviations, default=0.0)
    return largest if largest > 0 else 1.0


def colour(value, neutral: float, scale: float, gamma: float = 1.0) -> str:
    """rgb() for `value`: white at neutral, red above, blue below; |t| = (|v - neutral| / scale) ** gamma."""
    if value is None:
        return "transparent"
    d = (value - neutral) / scale
    strength = min(abs(d), 1.0) ** gamma
    target = POSITIVE if d >= 0 else NEGATIVE
    r, g, b = (round(255 + strength * (c - 255)) for c in target)
    return f"rgb({r},{g},{b})"


def record_note(record: dict, metric: str) -> str:
    """Why a record looks the way it does, when that could look like a bug."""
    if record.get("in_loss") is False and metric in ("weight", "future_kl"):
        return ("This response was left out of the loss (overlong filtering, or FIPO's rule that drops a sequence "
                "with more than one dual-clipped token): its weights and Future-KL were never computed. Its "
                "log-ratio and post_update_future_kl still show how the update moved it.")
    if record.get("mini_batch") == 0 and metric in ("weight", "future_kl", "log_ratio", "ratio"):
        return ("This response was in the first mini-batch of its step: it was scored by the policy that had "
                "sampled it, so its log-ratio and Future-KL are 0 and every weight is exactly 1. FIPO acts from "
                "the second mini-batch on; choose post_update_future_kl to see how the whole step moved it.")
    if record.get("loss") in ("dapo", "grpo") and metric == "weight":
        return f"{str(record['loss']).upper()} gives every token weight 1; Future-KL is shown for comparison only."
    return ""


def token_segments(record: dict) -> list[tuple[str, bool]]:
    """(segment kind, opens a verification move) of every token."""
    out = [("working", False)] * len(record["tokens"])
    for span in record.get("segments") or []:
        for i in range(span["start"], span["end"]):
            out[i] = (span["kind"], i < span["opening"])
    return out


def tooltip(record: dict, index: int, segment: tuple[str, bool] | None = None) -> str:
    lines = [f"#{index} {record['tokens'][index]!r}"]
    if segment is not None:
        lines.append(f"segment {segment[0]}" + (" (opens the move)" if segment[1] else ""))
    for name, values in record["metrics"].items():
        value = values[index]
        lines.append(f"{name} {'-' if value is None else f'{value:.4f}'}")
    return "\n".join(lines)


def header(record: dict) -> str:
    parts = [f"step {record.get('step')}", f"sample {record.get('sample')}", f"mini-batch {record.get('mini_batch')}"]
    if record.get("reward") is not None:
        parts.append(f"reward {record['reward']:+.3g}")
    if record.get("advantage") is not None:
        parts.append(f"advantage {record['advantage']:+.3f}")
    parts.append(f"{len(record['tokens'])} tokens ({record.get('finish_reason')})")
    return " · ".join(parts)


def legend_html(metric: str, neutral: float, scale: float, gamma: float) -> str:
    stops = ", ".join(colour(neutral + scale * x / 4, neutral, scale, gamma) for x in range(-4, 5))
    return (f'<div class="fipo-head">colour: <b>{html.escape(metric)}</b> '
            f'<span style="display:inline-block;width:160px;height:10px;vertical-align:middle;'
            f'background:linear-gradient(to right, {stops})"></span> '
            f"{neutral - scale:.3g} · {neutral:.3g} · {neutral + scale:.3g}</div>")


def segment_legend_html() -> str:
    """The segment kinds and their band colours."""
    items = "".join(f'<span class="fipo-swatch" style="background:{c}"></span>'
                    f'<span title="{html.escape(phases.SEGMENT_DESCRIPTIONS[k])}">{k}</span>'
                    for k, c in SEGMENT_COLOURS.items())
    return f'<div class="fipo-seg-legend">segments (band under each token):{items}</div>'


def bands_html(record: dict) -> str:
    """One track per segment kind, each segment drawn where its tokens are in the response."""
    n = max(len(record["tokens"]), 1)
    rows = []
    for kind, c in SEGMENT_COLOURS.items():
        blocks = "".join(
            f'<span class="fipo-band-seg" data-start="{s["start"]}" style="left:{100 * s["start"] / n:.3f}%;'
            f'width:{100 * (s["end"] - s["start"]) / n:.3f}%;background:{c}" '
            f'title="{kind}: tokens {s["start"]}-{s["end"] - 1}"></span>'
            for s in record["segments"] if s["kind"] == kind)
        rows.append(f'<div class="fipo-band" data-kind="{kind}"><span class="fipo-band-label">{kind}</span>'
                    f'<span class="fipo-band-track">{blocks}</span></div>')
    return f'<div class="fipo-bands">{"".join(rows)}</div>'


def _number(value, digits: str) -> str:
    return "-" if value is None else format(value, digits)


def summary_html(record: dict) -> str:
    """Per segment kind: token count, mean weight, mean Future-KL (the record's tokens of that kind)."""
    rows = "".join(
        f'<tr><td style="text-align:left"><span class="fipo-swatch" style="margin-left:0;background:'
        f'{SEGMENT_COLOURS.get(r["kind"], "#ff7f00")}"></span>{html.escape(r["kind"])}</td><td>{r["tokens"]}</td>'
        f'<td>{_number(r["weight_mean"], ".4f")}</td><td>{_number(r["future_kl_mean"], "+.4g")}</td></tr>'
        for r in record["segment_summary"])
    return ('<table class="fipo-seg-table"><tr><th>segment</th><th>tokens</th><th>mean weight</th>'
            f"<th>mean Future-KL</th></tr>{rows}</table>")


def token_html(record: dict, metric: str = "weight", gamma: float = 1.0) -> str:
    """One record as self-contained HTML: coloured spans with title= tooltips and a band under each
    token for its segment, a legend, a note, one track per segment kind and the per-kind summary."""
    record = with_segments(record)
    values = record["metrics"].get(metric) or [None] * len(record["tokens"])
    neutral = neutral_of(metric)
    scale = scale_of(values, neutral)
    spans = []
    for i, (piece, segment) in enumerate(zip(record["tokens"], token_segments(record))):
        kind = "fipo-tok fipo-nl" if "\n" in piece else "fipo-tok"
        kind += f" fipo-seg-{segment[0]}" + (" fipo-cue" if segment[1] else "")
        spans.append(f'<span class="{kind}" data-i="{i}" style="background:{colour(values[i], neutral, scale, gamma)}" '
                     f'title="{html.escape(tooltip(record, i, segment))}">{html.escape(piece)}</span>')
    note = record_note(record, metric)
    return (
        f'<div class="fipo-static fipo-tokenview">{STYLE}'
        f'<div class="fipo-head">{html.escape(header(record))}</div>'
        f"{legend_html(metric, neutral, scale, gamma)}{segment_legend_html()}"
        + (f'<div class="fipo-note">{html.escape(note)}</div>' if note else "")
        + f'<div class="fipo-text">{"".join(spans)}</div>{bands_html(record)}{summary_html(record)}</div>'
    )
