"""The views' matplotlib figures, as base64 PNGs for static HTML: the metric curves of a run (the
report, the Dashboard's fallback) and PhaseView's lengths, phases, accuracy and segment groups.
Its own module so that the report and the widgets both import it, and neither imports the other
for a picture."""

from __future__ import annotations

import base64
import io

from ..analysis import phases
from .colours import DASHED, GROUP_COLOURS, PHASE_COLOURS, SEGMENT_COLOURS

LENGTH_KEYS = ("min", "q25", "median", "mean", "q75", "max")  # the length quantiles PhaseView draws


def step_axis(ax) -> None:
    """Steps are whole numbers: ticks at integers only (never at 1.5, 2.5), also for one step drawn
    (a step either side, else the locator falls back to fractions). Call it after plotting."""
    import math

    from matplotlib.ticker import MaxNLocator

    lo, hi = ax.dataLim.intervalx
    if math.isfinite(lo) and math.isfinite(hi) and hi - lo < 2:
        ax.set_xlim(lo - 1, hi + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step", fontsize=8)


def _png(fig) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def metric_figure_png(rows: list[dict], panels) -> str:
    """Curves of `panels` ([(title, [metric keys])]) over steps, as a base64 PNG."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's own backend stays as it is

    steps = [r["step"] for r in rows]
    n_rows = (len(panels) + 1) // 2
    fig = Figure(figsize=(11, 2.6 * n_rows))
    axes = fig.subplots(n_rows, 2, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            if any(key in r for r in rows):
                ax.plot(steps, [r.get(key, float("nan")) for r in rows], marker="o", ms=3, label=key)
        ax.set_title(title, fontsize=10)
        step_axis(ax)
        ax.tick_params(labelsize=8)
        if ax.get_lines():
            ax.legend(fontsize=7, loc="best")
        else:  # the run logged none of these (e.g. no critic, no evaluation)
            ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="#777")
        ax.grid(alpha=0.3)
    return _png(fig)


def phase_figure_png(data: list[dict], selected: int | None = None) -> str:
    """PhaseView's six charts of its steps_data: length quantiles, phase shares, accuracy; token share,
    mean weight and mean Future-KL per segment group; a dotted line at the selected step."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's own backend stays as it is

    steps = [d["step"] for d in data]
    fig = Figure(figsize=(12, 6))
    grid = fig.subplots(2, 3)
    axes = grid[0]
    for key in LENGTH_KEYS:
        axes[0].plot(steps, [d["length"][key] for d in data], label=key, lw=2 if key in ("median", "mean") else 1)
    bottom = [0.0] * len(data)
    for p, colour in zip(phases.PHASE_NAMES, PHASE_COLOURS):
        values = [d["phases"][p - 1] for d in data]
        axes[1].bar(steps, values, bottom=bottom, color=colour, label=f"{p} {phases.PHASE_NAMES[p]}")
        bottom = [b + v for b, v in zip(bottom, values)]
    axes[2].plot(steps, [d["accuracy"] for d in data], color="#2ca02c", marker="o", ms=3)
    for ax, title in zip(axes, ("response length (tokens)", "share of each phase", "accuracy")):
        ax.set_title(title, fontsize=10)
        step_axis(ax)
        if selected is not None:
            ax.axvline(selected, color="black", ls=":", lw=1)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    _segment_axes(grid[1], data, selected)
    return _png(fig)


def _segment_axes(axes, data: list[dict], selected: int | None) -> None:
    """Token share (stacked), mean weight and mean Future-KL per segment group, over steps."""
    steps = [d["step"] for d in data]
    nan = float("nan")

    def values(group, key):
        return [nan if d.get("segments", {}).get(group, {}).get(key) is None else d["segments"][group][key]
                for d in data]

    bottom = [0.0] * len(data)
    for kind in SEGMENT_COLOURS:
        share = [0.0 if v != v else v for v in values(kind, "share")]
        axes[0].bar(steps, share, bottom=bottom, color=SEGMENT_COLOURS[kind], label=kind)
        bottom = [b + v for b, v in zip(bottom, share)]
    for ax, key in ((axes[1], "weight"), (axes[2], "future_kl")):
        for group, colour in GROUP_COLOURS.items():
            ax.plot(steps, values(group, key), color=colour, ls="--" if group in DASHED else "-", marker="o", ms=2,
                    label=group)
    titles = ("share of tokens per segment", "mean weight per segment", "mean Future-KL per segment")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        step_axis(ax)
        ax.legend(fontsize=6)
        if selected is not None:
            ax.axvline(selected, color="black", ls=":", lw=1)
