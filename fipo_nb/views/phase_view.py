"""PhaseView: how responses change shape over training, by the paper's four reasoning phases."""

from __future__ import annotations

import html

import anywidget
import traitlets as t

from ..analysis import phases
from ..analysis.segments import GROUPS
from .assets import StaticHTMLFallback, esm, stylesheet
from .figures import LENGTH_KEYS, phase_figure_png
from .records import METRICS, view_records
from .static import STYLE, token_html


def steps_data(metrics_rows: list[dict]) -> list[dict]:
    """Per step: length quantiles, share of each phase, accuracy, and per segment group
    (segments.GROUPS: phases' kinds, the tokens that open a verification move, the rest) the token
    share, mean weight and mean Future-KL (from metrics.jsonl rows)."""
    return [{
        "step": int(row["step"]),
        "length": {k: row.get(f"length/{k}") for k in LENGTH_KEYS},
        "phases": [row.get(f"phase/{p}_frac", 0.0) for p in phases.PHASE_NAMES],
        "accuracy": row.get("accuracy/mean"),
        "segments": {g: {"share": row.get(f"segment/{g}/token_frac"), "weight": row.get(f"segment/{g}/weight_mean"),
                         "future_kl": row.get(f"segment/{g}/future_kl_mean")} for g in GROUPS},
    } for row in metrics_rows]


def phase_examples(records: list[dict], step: int) -> list[dict]:
    """For each phase, one traced response of `step` in that phase (the largest |advantage|), if any."""
    by_phase: dict[int, tuple] = {}
    for record in records:
        if record["step"] != step:
            continue
        result = phases.classify("".join(record["tokens"]))
        best = by_phase.get(result.phase)
        if best is None or abs(record.get("advantage") or 0) > abs(best[0].get("advantage") or 0):
            by_phase[result.phase] = (record, result.features)
    examples = []
    for phase, name in phases.PHASE_NAMES.items():
        record, features = by_phase.get(phase, (None, {}))
        examples.append({"phase": phase, "name": name, "record": record, "features": features,
                         "missing": "" if record else f"no traced response of step {step} is in this phase"})
    return examples


class PhaseView(StaticHTMLFallback, anywidget.AnyWidget):
    """Response-length quantiles (min/Q25/median/mean/Q75/max), phase shares and accuracy per step,
    and where the update acted: token share, mean weight and mean Future-KL per reasoning segment
    (and at the tokens that open a verification move); pick a step (click a chart or the menu) to
    see traced example responses of each phase, with their segments."""

    _esm = esm("phase_view")
    _css = stylesheet()

    steps_data = t.List(t.Dict()).tag(sync=True)
    selected_step = t.Int(0).tag(sync=True)
    examples = t.List(t.Dict()).tag(sync=True)
    metric = t.Unicode("weight").tag(sync=True)
    metrics = t.List(t.Unicode()).tag(sync=True)
    gamma = t.Float(1.0).tag(sync=True)

    def __init__(self, metrics_rows: list[dict], traces=None, *, step: int | None = None, metric: str = "weight",
                 **kwargs):
        if not metrics_rows:
            raise ValueError("PhaseView: no training steps to show")
        records = view_records(traces) if traces is not None else []
        self._records = records
        available = [m for m in METRICS if any(m in r["metrics"] for r in records)] or ["weight"]
        data = steps_data(metrics_rows)
        chosen = step if step is not None else data[-1]["step"]
        super().__init__(steps_data=data, metrics=available, metric=metric, selected_step=chosen,
                         examples=phase_examples(records, chosen), **kwargs)
        self.observe(self._on_step, names="selected_step")  # from here on: the user picks steps

    @classmethod
    def from_run(cls, run_dir, **kwargs) -> "PhaseView":
        from pathlib import Path

        from ..analysis.runs import read_jsonl
        from ..analysis.traces import load_traces

        return cls(read_jsonl(Path(run_dir) / "metrics.jsonl"), load_traces(run_dir), **kwargs)

    def _on_step(self, change) -> None:
        self.examples = phase_examples(self._records, change["new"])

    def to_html(self) -> str:
        """Self-contained HTML: the three charts as an inline PNG, a table, and the examples."""
        rows = "".join(
            f"<tr><td>{d['step']}</td>" + "".join(f"<td>{v:.2f}</td>" for v in d["phases"])
            + f"<td>{(d['length']['mean'] or 0):.1f}</td><td>{(d['accuracy'] or 0):.3f}</td></tr>"
            for d in self.steps_data
        )
        head = "".join(f"<th>{p} {html.escape(n)}</th>" for p, n in phases.PHASE_NAMES.items())
        blocks = []
        for example in self.examples:
            title = f"<h4>phase {example['phase']}: {html.escape(example['name'])}</h4>"
            if example["record"] is None:
                blocks.append(f"{title}<div class='fipo-head'>{html.escape(example['missing'])}</div>")
            else:
                features = " · ".join(f"{k} {v}" for k, v in example["features"].items())
                blocks.append(f"{title}<div class='fipo-head'>{html.escape(features)}</div>"
                              + token_html(example["record"], self.metric, self.gamma))
        return (
            f'<div class="fipo-static fipo-phaseview">{STYLE}'
            f'<img alt="lengths, phases, accuracy and segment weights per step" '
            f'src="data:image/png;base64,{phase_figure_png(self.steps_data, self.selected_step)}">'
            f'<table style="border-collapse:collapse;font:12px system-ui" border="1" cellpadding="3">'
            f"<tr><th>step</th>{head}<th>mean length</th><th>accuracy</th></tr>{rows}</table>"
            f"<h3 style='font:bold 13px system-ui'>Examples of step {self.selected_step}</h3>{''.join(blocks)}</div>"
        )
