"""A view record as static, self-contained HTML: inline styles, title= tooltips, no script and
nothing fetched. What exported notebooks, nbconvert and the report show; it looks like the live
widget because both take their colours from colours.py."""

from __future__ import annotations

import html

from ..analysis import phases
from .colours import GROUP_COLOURS, SEGMENT_COLOURS, band_css, colour, neutral_of, scale_of
from .records import record_note, token_groups, with_segments

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
""" + band_css(".fipo-static") + "</style>"


def tooltip(record: dict, index: int, segment: tuple[str, bool] | None = None) -> str:
    """A token's title=: its index and text, its segment (kind, opens the move), every metric."""
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


def legend_html(metric: str, neutral: float, scale: float, gamma: float, flat: bool = False) -> str:
    """The colour bar and its range; flat (every value neutral, e.g. a first mini-batch's weights): says so."""
    stops = ", ".join(colour(neutral + scale * x / 4, neutral, scale, gamma) for x in range(-4, 5))
    ticks = f"every token {neutral:.3g}: nothing to colour" if flat else \
        f"{neutral - scale:.3g} · {neutral:.3g} · {neutral + scale:.3g}"
    return (f'<div class="fipo-head">colour: <b>{html.escape(metric)}</b> '
            f'<span style="display:inline-block;width:160px;height:10px;vertical-align:middle;'
            f'background:linear-gradient(to right, {stops})"></span> {ticks}</div>')


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
    """The record's segment_summary as a table: per segment kind, then the tokens that open a
    verification move, their count, mean weight and mean Future-KL."""
    rows = "".join(
        f'<tr><td style="text-align:left"><span class="fipo-swatch" style="margin-left:0;background:'
        f'{GROUP_COLOURS[r["kind"]]}"></span>{html.escape(r["kind"])}</td><td>{r["tokens"]}</td>'
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
    kinds, opening = token_groups(record)
    spans = []
    for i, piece in enumerate(record["tokens"]):
        segment = (phases.SEGMENT_KINDS[kinds[i]], bool(opening[i]))
        kind = "fipo-tok fipo-nl" if "\n" in piece else "fipo-tok"
        kind += f" fipo-seg-{segment[0]}" + (" fipo-cue" if segment[1] else "")
        spans.append(f'<span class="{kind}" data-i="{i}" style="background:{colour(values[i], neutral, scale, gamma)}" '
                     f'title="{html.escape(tooltip(record, i, segment))}">{html.escape(piece)}</span>')
    note = record_note(record, metric)
    return (
        f'<div class="fipo-static fipo-tokenview">{STYLE}'
        f'<div class="fipo-head">{html.escape(header(record))}</div>'
        f"{legend_html(metric, neutral, scale, gamma, all(v is None or v == neutral for v in values))}"
        f"{segment_legend_html()}"
        + (f'<div class="fipo-note">{html.escape(note)}</div>' if note else "")
        + f'<div class="fipo-text">{"".join(spans)}</div>{bands_html(record)}{summary_html(record)}</div>'
    )
