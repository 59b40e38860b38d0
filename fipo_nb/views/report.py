"""A self-contained static HTML report of a run: metric curves, evaluation (avg@k, pass@k, lengths),
the reasoning-phase view, token views of traced responses, a per-step table and the configuration.

    fipo_nb.report.write_report("runs/demo")   ->  runs/demo/report.html
    fipo-nb report runs/demo

No script, stylesheet or image is loaded from anywhere: everything is inline (PNG as data:
URLs, inline styles, title= tooltips).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..analysis.files import write_atomic
from ..analysis.runs import read_jsonl, read_metrics
from ..analysis.segments import panel_keys
from .figures import metric_figure_png
from .records import reweighted_first

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
EVAL_KEYS = ["eval/avg@{k}", "eval/pass@{k}", "eval/reward_mean", "eval/length/mean", "eval/length/median",
             "eval/length/max", "eval/truncated_frac", "eval/problems"]
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}img{max-width:100%}
.table{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}th{background:#f3f3f3}
pre{background:#f7f7f7;padding:1em;font-size:12px;overflow-x:auto}"""


def _table(rows: list[dict], keys: list[str]) -> str:
    """rows as an HTML table of `keys`, in a box that scrolls sideways instead of overflowing the page."""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows)
    return f'<div class="table"><table><tr>{head}</tr>{body}</table></div>'


def _eval_section(run_dir: Path, config: dict) -> str:
    """avg@k, pass@k and response lengths of every evaluation (eval.jsonl), as curves and a table."""
    rows = read_jsonl(run_dir / "eval.jsonl")
    if not rows:
        if not config.get("eval_data") and not config.get("eval_holdout"):
            why = "no eval_data and no eval_holdout"
        elif not config.get("eval_every"):
            why = "eval_every=0: only FIPOTrainer.evaluate() evaluates"
        else:
            why = f"eval_every={config.get('eval_every')}: none was due yet"
        return f"<h2>Evaluation</h2><p>No evaluation in this run ({html.escape(why)}).</p>"
    k = config.get("eval_k") or next(int(key.split("@")[1]) for key in rows[0] if key.startswith("eval/avg@"))
    keys = [key.format(k=k) for key in EVAL_KEYS]
    panels = [(f"avg@{k} and pass@{k}", keys[:2]),
              ("Response length (tokens)", [f"eval/length/{q}" for q in ("min", "q25", "median", "mean", "q75", "max")])]
    last = rows[-1]
    return (f"<h2>Evaluation</h2><p>{len(rows)} evaluation(s) of {int(last.get('eval/problems', 0))} held-out "
            f"problem(s) {_eval_source(config)}, {k} samples each: at step "
            f"{last['step']}, avg@{k} <b>{last[keys[0]]:.3f}</b>, pass@{k} <b>{last[keys[1]]:.3f}</b>. Read from "
            f"<code>eval.jsonl</code>.</p>"
            f'<img alt="evaluation curves" src="data:image/png;base64,{metric_figure_png(rows, panels)}">'
            + _table(rows, ["step", *keys]))


def _eval_source(config: dict) -> str:
    if config.get("eval_holdout"):
        return f"from <code>{html.escape(str(config.get('data')))}</code> (never trained on)"
    return f"of <code>{html.escape(str(config.get('eval_data')))}</code>"


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
    shown = reweighted_first(records)[:max_records]
    views = "".join(token_html(r, "weight") for r in shown)
    return (f"<h2>Reasoning phases</h2>{phase}"
            f"<h2>Token influence</h2><p>{len(shown)} traced responses of the newest steps, each token coloured by "
            "its influence weight (white = 1, red = more weight): first those FIPO re-weighted most (later "
            "mini-batches, the largest spread of weights), then first-mini-batch responses, whose weights are all "
            "1. Hover a token for its text and every per-token metric.</p>" + views)


def render_report(run_dir, *, max_records: int = 12) -> str:
    """The report page as a string."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    figure = f'<img alt="metric curves" src="data:image/png;base64,{metric_figure_png(rows, PANELS)}">' if rows else "<p>No steps yet.</p>"
    loss = config.get("fipo", {}).get("loss", "fipo").upper()
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>fipo_nb report: {html.escape(run_dir.name)}</title>
<style>{STYLE}</style>
</head><body>
<h1>{loss} run: {html.escape(str(run_dir))}</h1>
<p>{len(rows)} step(s) of model <code>{html.escape(str(config.get("model", "?")))}</code>
({html.escape(str(config.get("mode", "?")))}). Curves and table read <code>metrics.jsonl</code>; token views read
<code>traces/</code>.</p>
<h2>Metrics</h2>{figure}
{_eval_section(run_dir, config)}
{_traced_section(run_dir, rows, max_records)}
<h2>Per step</h2>{_table(rows, TABLE_KEYS)}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
</body></html>
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value)) if value is not None else ""


def write_report(run_dir, out=None) -> Path:
    """Write the report (default RUN_DIR/report.html) and return its path. The file is replaced all at
    once: a failure (a full disk) leaves the earlier report as it was and raises WriteError naming it."""
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    return write_atomic(target, render_report(run_dir))
