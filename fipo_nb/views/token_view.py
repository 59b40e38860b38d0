"""TokenView: one response, each token coloured by its Future-KL weight (or another metric)."""

from __future__ import annotations

import anywidget
import traitlets as t

from .assets import StaticHTMLFallback, esm, stylesheet
from .records import METRICS, idle, record_note, reweighted_first, view_records
from .static import token_html


class TokenView(StaticHTMLFallback, anywidget.AnyWidget):
    """Colour each token of a traced response by `metric`; hover a token for all its metrics.

    records: the DataFrame of `fipo_nb.trace.load_traces`, trace rows, or view records. With
    several steps or samples a step slider and a sample picker appear; only the selected
    record is sent to the browser. `metric`: weight, future_kl, post_update_future_kl,
    log_ratio or ratio, on a diverging scale around 1 (weight, ratio) or 0 (the others);
    `gamma` sets the contrast. It opens on the newest step's response FIPO re-weighted most (`step`
    and `sample`, an index into that step's responses, choose another): a later mini-batch with the
    largest spread of weights, not a first-mini-batch one whose weights are all 1.
    """

    _esm = esm("token_view")
    _css = stylesheet()

    record = t.Dict().tag(sync=True)
    metric = t.Unicode("weight").tag(sync=True)
    metrics = t.List(t.Unicode()).tag(sync=True)
    gamma = t.Float(1.0).tag(sync=True)
    steps = t.List(t.Int()).tag(sync=True)
    step_index = t.Int(0).tag(sync=True)
    samples = t.List(t.Unicode()).tag(sync=True)
    sample_index = t.Int(0).tag(sync=True)
    note = t.Unicode("").tag(sync=True)

    def __init__(self, records, *, metric: str = "weight", gamma: float = 1.0, step: int | None = None,
                 sample: int | None = None, **kwargs):
        self._all = view_records(records)
        if not self._all:
            raise ValueError("TokenView: no records to show")
        available = [m for m in METRICS if any(m in r["metrics"] for r in self._all)]
        if metric not in available:
            raise ValueError(f"TokenView: metric {metric!r} is not in these records; choose one of {', '.join(available)}")
        steps = sorted({r["step"] for r in self._all})
        if step is not None and step not in steps:
            raise ValueError(f"TokenView: no traced response of step {step}; steps: {', '.join(map(str, steps))}")
        if step is None:  # the newest step with a response an update re-weighted
            step = max(r["step"] for r in ([r for r in self._all if not idle(r)] or self._all))
        opening = reweighted_first(self._rows_of(step))[0]
        super().__init__(metrics=available, metric=metric, gamma=gamma, steps=steps, **kwargs)
        if sample is None:  # the response FIPO re-weighted most
            sample = next(i for i, r in enumerate(self._rows_of(step)) if r is opening)
        self._select(steps.index(step), sample)

    @classmethod
    def from_run(cls, run_dir, steps=None, **kwargs) -> "TokenView":
        """Every traced response of a run (or of `steps`)."""
        from ..analysis.traces import load_traces

        frame = load_traces(run_dir, steps=steps)
        if not len(frame):
            raise ValueError(f"TokenView: no traced responses in {run_dir}/traces (no step run yet, or trace_samples=0)")
        return cls(frame, **kwargs)

    def _rows_of(self, step: int) -> list[dict]:
        return [r for r in self._all if r["step"] == step]

    def _step_records(self, step_index: int) -> list[dict]:
        return self._rows_of(self.steps[step_index])

    def _select(self, step_index: int, sample_index: int) -> None:
        rows = self._step_records(step_index)
        sample_index = min(max(sample_index, 0), len(rows) - 1)
        with self.hold_sync():
            self.step_index = step_index
            self.samples = [f"sample {r['sample']} · mini-batch {r['mini_batch']} · reward {r['reward']:+.3g}"
                            for r in rows]
            self.sample_index = sample_index
            self.record = rows[sample_index]
            self.note = record_note(self.record, self.metric)

    @t.observe("step_index")
    def _on_step(self, change) -> None:
        if change["new"] != change["old"] and 0 <= change["new"] < len(self.steps):
            rows = self._step_records(change["new"])
            self._select(change["new"], rows.index(reweighted_first(rows)[0]))

    @t.observe("sample_index")
    def _on_sample(self, change) -> None:
        rows = self._step_records(self.step_index)
        if 0 <= change["new"] < len(rows) and self.record is not rows[change["new"]]:
            self.record = rows[change["new"]]
            self.note = record_note(self.record, self.metric)

    @t.observe("metric")
    def _on_metric(self, change) -> None:
        self.note = record_note(self.record, change["new"])

    def to_html(self) -> str:
        """The selected response as self-contained HTML (inline styles, title= tooltips, no script)."""
        return token_html(self.record, self.metric, self.gamma)
