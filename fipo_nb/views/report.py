"""A self-contained static HTML report of a run: metric curves, the reasoning-phase view,
token views of traced responses, a per-step table and the configuration.

    fipo_nb.report.write_report("runs/demo")   ->  runs/demo/report.html
    fipo-nb report runs/demo

No script, stylesheet or image is loaded from anywhere: everything is inline (PNG as data:
URLs, inline styles, title= tooltips).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..analysis.runs import read_metrics
from ..analysis.segments import panel_keys
from .figures import metric_figure_png

PANELS = [
    ("Reward and accuracy", ["reward/mean", "accuracy/mean"]),
    ("Response length (tokens)", ["length/min", "length/q25", "length/median", "length/mean", "length/q75", "length/max"]),
    ("Influence weights", ["fipo/weight_mean", "fipo/weight_max", "fipo/weight_min"]),
    ("Future-KL", ["fipo/future_kl_mean"]),
    ("Clipping", ["policy/clip_frac", "policy/dual_clip_frac", "policy/dropped_seq_frac",
                  "fipo/weight_clip_frac_upper"]),
    ("Approximate KL (old || new)", ["policy/approx_kl"]),
    ("Gradient norm", ["grad_norm"]),
    ("Time per step (s)", ["time/generate_s", "time/logprob_s", "time/update_s", "time/step_s"]),
    ("Share of tokens per reasoning segment", panel_keys("token_frac")[:5]),
    ("Mean influence weight per segment", panel_keys("weight_mean")),
    ("Mean Future-KL per segment", panel_keys("future_kl_mean")),
]

TABLE_KEYS = ["step", "reward/mean", "accuracy/mean", "length/mean", "fipo/weight_mean", "fipo/weight_max",
              "fipo/future_kl_mean", "policy/clip_frac", "policy/approx_kl", "grad_norm", "time/step_s"]


def _traced_section(run_dir: Path, rows: list[dict], max_records: int) -> str:
    """The phase view and the token views of the newest traced responses."""
    from ..analysis.traces import count_records, load_traces, trace_steps
    from .phase_view import PhaseView
    from .records import view_records
    from .static import token_html

    steps = trace_steps(run_dir)
    if not steps:
        return "<p>No token traces in this run (TrainConfig.trace_samples = 0).</p>"
    wanted, count = [], 0
    for step in reversed(steps):  # read only the newest steps the page shows
        wanted.append(step)
        count += count_records(run_dir, step)
        if count >= max_records:
            break
    records = view_records(load_traces(run_dir, steps=sorted(wanted)))
    phase = PhaseView(rows, records, step=wanted[0]).to_html() if rows else ""
    newest = sorted(records, key=lambda r: (-r["step"], r["sample"]))[:max_records]
    views = "".join(token_html(r, "weight") for r in newest)
    return (f"<h2>Reasoning phases</h2>{phase}"
            f"<h2>Token influence</h2><p>The {len(newest)} newest traced responses, each token coloured by its "
            "influence weight (white = 1, red = more weight); hover a token for its text and every per-token "
            f"metric.</p>{views}")


def render_report(run_dir, *, max_records: int = 12) -> str:
    """The report page as a string."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    head = "".join(f"<th>{html.escape(k)}</th>" for k in TABLE_KEYS)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in TABLE_KEYS) + "</tr>" for r in rows
    )
    figure = f'<img alt="metric curves" src="data:image/png;base64,{metric_figure_png(rows, PANELS)}">' if rows else "<p>No steps yet.</p>"
    loss = config.get("fipo", {}).get("loss", "fipo").upper()
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>fipo_nb report: {html.escape(run_dir.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}th{{background:#f3f3f3}}pre{{background:#f7f7f7;padding:1em;font-size:12px}}</style>
</head><body>
<h1>{loss} run: {html.escape(str(run_dir))}</h1>
<p>{len(rows)} step(s) of model <code>{html.escape(str(config.get("model", "?")))}</code>
({html.escape(str(config.get("mode", "?")))}). Curves and table read <code>metrics.jsonl</code>; token views read
<code>traces/</code>.</p>
<h2>Metrics</h2>{figure}
{_traced_section(run_dir, rows, max_records)}
<h2>Per step</h2><table><tr>{head}</tr>{body}</table>
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
</body></html>
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value)) if value is not None else ""


def write_report(run_dir, out=None) -> Path:
    """Write the report (default RUN_DIR/report.html) and return its path."""
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    target.write_text(render_report(run_dir), encoding="utf-8")
    return target
