"""Trace records as the views see them, and their static, self-contained HTML.

A view record is a plain JSON-able dict: step, sample, mini_batch, reward, advantage, ...,
"tokens" (the decoded piece of every token) and "metrics" ({name: [float | None per token]}).
The colour scale here is the one token_view.js uses, so the static fallback and the live
widget agree: diverging around the metric's neutral value (1 for weights and ratios, 0 for
the others), scaled by the record's largest deviation, with a contrast exponent `gamma`.
"""

from __future__ import annotations

import html
import math

METRICS = ("weight", "future_kl", "post_update_future_kl", "log_ratio", "ratio")
NEUTRAL = {"weight": 1.0, "ratio": 1.0}
POSITIVE, NEGATIVE = (214, 39, 40), (31, 119, 180)  # red above neutral, blue below
INFO = ("step", "sample", "problem_id", "mini_batch", "loss", "reward", "advantage", "correct", "answer",
        "finish_reason", "in_loss", "prompt")

STYLE = """<style>
.fipo-static{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;line-height:1.7;margin:.6em 0}
.fipo-static .fipo-text{white-space:pre-wrap;word-break:break-word;border:1px solid #ddd;padding:.5em;max-height:32em;overflow:auto}
.fipo-static .fipo-tok{border-radius:2px}
.fipo-static .fipo-nl::before{content:"\\21B5";opacity:.35}
.fipo-static .fipo-head{font-family:system-ui,sans-serif;font-size:12px;color:#444}
.fipo-static .fipo-note{font-family:system-ui,sans-serif;font-size:12px;background:#fff8e1;padding:.3em .5em}
</style>"""


def _float(value):
    value = float(value)
    return value if math.isfinite(value) else None


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
    return record


def view_records(source) -> list[dict]:
    """View records from a load_traces DataFrame, trace rows, view records, or a single one of those."""
    if hasattr(source, "iterrows"):
        return [view_record(row) for _, row in source.iterrows()]
    if isinstance(source, dict):
        source = [source]
    return [r if "metrics" in r else view_record(r) for r in source]


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


def tooltip(record: dict, index: int) -> str:
    lines = [f"#{index} {record['tokens'][index]!r}"]
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


def token_html(record: dict, metric: str = "weight", gamma: float = 1.0) -> str:
    """One record as self-contained HTML: coloured spans with title= tooltips, a legend, a note."""
    values = record["metrics"].get(metric) or [None] * len(record["tokens"])
    neutral = neutral_of(metric)
    scale = scale_of(values, neutral)
    spans = []
    for i, piece in enumerate(record["tokens"]):
        kind = "fipo-tok fipo-nl" if "\n" in piece else "fipo-tok"
        spans.append(f'<span class="{kind}" data-i="{i}" style="background:{colour(values[i], neutral, scale, gamma)}" '
                     f'title="{html.escape(tooltip(record, i))}">{html.escape(piece)}</span>')
    note = record_note(record, metric)
    return (
        f'<div class="fipo-static fipo-tokenview">{STYLE}'
        f'<div class="fipo-head">{html.escape(header(record))}</div>'
        f"{legend_html(metric, neutral, scale, gamma)}"
        + (f'<div class="fipo-note">{html.escape(note)}</div>' if note else "")
        + f'<div class="fipo-text">{"".join(spans)}</div></div>'
    )
