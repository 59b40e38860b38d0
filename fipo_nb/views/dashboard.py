"""Dashboard: live metrics while FIPOTrainer.train() runs in a notebook, one output redrawn in place."""

from __future__ import annotations

import html

import anywidget
import traitlets as t

from ..analysis.segments import GROUPS, panel_keys
from .assets import StaticHTMLFallback, esm, stylesheet
from .figures import metric_figure_png

KEYS = (
    "step", "reward/mean", "accuracy/mean", "length/min", "length/q25", "length/median", "length/mean", "length/q75",
    "length/max", "fipo/weight_mean", "fipo/weight_max", "fipo/weight_min", "policy/clip_frac",
    "policy/dual_clip_frac", "fipo/weight_clip_frac_upper", "policy/approx_kl", "grad_norm", "time/step_s",
    *(f"segment/{g}/{stat}" for g in GROUPS for stat in ("weight_mean", "future_kl_mean", "token_frac")),
    "critic/vf_loss", "critic/vf_explained_var", "critic/values/mean", "critic/returns/mean",
)
PANELS = [
    ("Reward and accuracy", ["reward/mean", "accuracy/mean"]),
    ("Response length (tokens)", ["length/min", "length/q25", "length/median", "length/mean", "length/q75", "length/max"]),
    ("Influence weights", ["fipo/weight_mean", "fipo/weight_max", "fipo/weight_min"]),
    ("Clipping", ["policy/clip_frac", "policy/dual_clip_frac", "fipo/weight_clip_frac_upper"]),
    ("Approximate KL", ["policy/approx_kl"]),
    ("Gradient norm", ["grad_norm"]),
    ("Mean weight per segment", panel_keys("weight_mean")),
    ("Mean Future-KL per segment", panel_keys("future_kl_mean")),
]
CRITIC_PANEL = ("Critic (PPO)", ["critic/vf_loss", "critic/vf_explained_var", "critic/values/mean",
                                 "critic/returns/mean"])  # drawn when the run trains one


class Dashboard(StaticHTMLFallback, anywidget.AnyWidget):
    """Training curves that update after every step.

        dash = Dashboard(trainer)          # shows the steps so far
        dash                               # display it once
        trainer.train(20, callback=dash)   # each step redraws the same output

    Each step also updates the output's static fallback (the picture an exported or executed
    notebook keeps), so a saved notebook shows the last step, not the state at display time.
    """

    _esm = esm("dashboard")
    _css = stylesheet()

    history = t.List(t.Dict()).tag(sync=True)

    def __init__(self, trainer=None, **kwargs):
        super().__init__(**kwargs)
        self._displays = []  # IPython display handles of the outputs showing this dashboard
        if trainer is not None:
            self.history = [self._pick(m) for m in trainer.history]

    def _ipython_display_(self) -> None:
        """Display with a display id, so that `update` can refresh this output's static fallback too."""
        from IPython.display import display

        data, metadata = self._repr_mimebundle_()
        self._displays.append(display(data, metadata=metadata, raw=True, display_id=True))

    @staticmethod
    def _pick(metrics: dict) -> dict:
        return {k: metrics[k] for k in KEYS if k in metrics}

    def update(self, result) -> None:
        """Add one step: a trainer StepResult or a metrics dict."""
        metrics = getattr(result, "metrics", result)
        self.history = [*self.history, self._pick(metrics)]  # the live view redraws from this
        if self._displays:
            data, metadata = self._repr_mimebundle_()
            for handle in self._displays:
                handle.update(data, metadata=metadata, raw=True)

    __call__ = update

    def _panels(self) -> list:
        critic = any("critic/vf_loss" in row for row in self.history)
        return [*PANELS, CRITIC_PANEL] if critic else PANELS

    def to_html(self) -> str:
        if not self.history:
            return "<div class='fipo-static'>no steps yet</div>"
        last = self.history[-1]
        status = " · ".join(f"{k} {last[k]:.4g}" for k in ("step", "reward/mean", "accuracy/mean", "length/mean")
                            if k in last)
        return (f"<div class='fipo-static fipo-dashboard'><div style='font:12px system-ui'>{html.escape(status)}</div>"
                f"<img alt='training curves' src='data:image/png;base64,"
                f"{metric_figure_png(self.history, self._panels())}'>"
                "</div>")
