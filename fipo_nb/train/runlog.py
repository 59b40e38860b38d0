"""The run's log on disk: OUT/metrics.jsonl and OUT/eval.jsonl (one JSON object per line),
TensorBoard scalars when tensorboard is installed, and the per-step table printed in terminals.

Each row is appended whole and synced (analysis.files.append_row); a full disk raises WriteError
naming the file, the rows before intact. A resumed run drops a last row cut short by a kill, with a
warning, and rewrites the file without it at once (analysis.files.write_atomic)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from ..analysis.files import append_row, write_atomic
from ..analysis.runs import parse_jsonl

TABLE = [("step", "step", "{:>4.0f}"), ("reward", "reward/mean", "{:>+7.3f}"), ("acc", "accuracy/mean", "{:>5.2f}"),
         ("len", "length/mean", "{:>6.1f}"), ("w_mean", "fipo/weight_mean", "{:>6.3f}"),
         ("w_max", "fipo/weight_max", "{:>6.3f}"), ("fkl", "fipo/future_kl_mean", "{:>+8.4f}"),
         ("clip", "policy/clip_frac", "{:>5.3f}"), ("kl", "policy/approx_kl", "{:>+8.5f}"),
         ("gnorm", "grad_norm", "{:>6.3f}"), ("sec", "time/step_s", "{:>6.1f}")]


def format_table_header() -> str:
    return " ".join(f"{name:>{len(fmt.format(0.0))}}" for name, _, fmt in TABLE)


def format_table_row(metrics: dict[str, float]) -> str:
    return " ".join(fmt.format(metrics.get(key, float("nan"))) for _, key, fmt in TABLE)


def format_eval_row(metrics: dict[str, float]) -> str | None:
    """The line under a step's row when the step ran an evaluation (None when it did not):
    "  eval: avg@4 0.688 · pass@4 1.000 · reward +0.375 · length 25.7 (median 9) · truncated 0.06 · 8 problems"."""
    k = next((key.removeprefix("eval/avg@") for key in metrics if key.startswith("eval/avg@")), None)
    if k is None:
        return None
    get = lambda key: metrics.get(key, float("nan"))  # noqa: E731
    return (f"  eval: avg@{k} {get(f'eval/avg@{k}'):.3f} · pass@{k} {get(f'eval/pass@{k}'):.3f} · "
            f"reward {get('eval/reward_mean'):+.3f} · length {get('eval/length/mean'):.1f} "
            f"(median {get('eval/length/median'):.0f}) · truncated {get('eval/truncated_frac'):.2f} · "
            f"{get('eval/problems'):.0f} problems")


TRUNCATION_NOTE = 0.25  # a share of cut responses worth a line after train()


def truncation_note(rows: list[dict[str, float]], limit: int) -> str | None:
    """A line when, over the steps in `rows` (their metrics), a quarter or more of the responses ran out of
    tokens: those have no final answer and score incorrect, so the run mostly learns to be shorter."""
    shares = [r["response/truncated_frac"] for r in rows if "response/truncated_frac" in r]
    if not shares or sum(shares) / len(shares) < TRUNCATION_NOTE:
        return None
    return (f"note: {sum(shares) / len(shares):.0%} of these steps' responses ran out of "
            f"max_response_length={limit} tokens; a cut response has no final answer and scores incorrect. "
            "--set max_response_length=N (TrainConfig(max_response_length=N)) gives longer answers room")


def no_signal_note(rows: list[dict[str, float]]) -> str | None:
    """A line naming the steps in `rows` where every group's responses scored alike: their advantages are all
    0, so those steps trained nothing (and FIPO's weights stay 1 in the steps after them). None otherwise."""
    idle = [int(r["step"]) for r in rows if r.get("groups/all_equal_frac") == 1.0]
    if not idle:
        return None
    return (f"note: at step(s) {', '.join(map(str, idle))} every group's responses scored alike (all right or all "
            "wrong): every advantage was 0 and the step changed nothing. Easier problems, more samples_per_prompt or "
            "dynamic_sampling=true (DAPO's: it draws again until groups differ) give the run something to learn")


class RunLog:
    """Appends metrics and evaluations of a run in `out_dir`."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.eval_path = self.out_dir / "eval.jsonl"
        self.tensorboard_dir = self.out_dir / "tensorboard"
        self._tensorboard = None

    def _writer(self, first_step: int):
        """A SummaryWriter opened at the first step logged (events of later steps from an earlier,
        resumed-over run are purged); None when tensorboard is not installed."""
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: JSON lines only
                return None
            self._tensorboard = SummaryWriter(log_dir=str(self.tensorboard_dir), purge_step=first_step)
        return self._tensorboard

    def append(self, metrics: dict[str, float]) -> None:
        append_row(self.metrics_path, metrics)
        writer = self._writer(int(metrics["step"]))
        if writer is not None:
            for key, value in metrics.items():
                if key != "step":
                    writer.add_scalar(key, value, metrics["step"])
            writer.flush()

    def append_eval(self, step: int, metrics: dict[str, float]) -> None:
        append_row(self.eval_path, {"step": step, **metrics})

    def keep_until(self, step: int) -> list[dict]:
        """Drop rows of steps after `step` from both files (0: every row, and the TensorBoard logs);
        returns the metrics rows kept. A last row cut short by a kill is dropped with a warning; any
        other broken row raises ValueError naming file and line. A file is rewritten all at once,
        and only when something changes."""
        if step == 0 and self.tensorboard_dir.exists():
            shutil.rmtree(self.tensorboard_dir)
        kept = []
        for path in (self.metrics_path, self.eval_path):
            if not path.exists():
                continue
            if step == 0:  # a new run: nothing of the old one is read
                if path.stat().st_size:
                    write_atomic(path, b"")
                continue
            rows, torn = parse_jsonl(path)
            if torn is not None:
                warnings.warn(f"{path}: line {torn} was cut short when the run was stopped (a row half written): "
                              "dropped from the file", stacklevel=4)
            later = [row for row in rows if row["step"] > step]
            rows = [row for row in rows if row["step"] <= step]
            text = "".join(json.dumps(row) + "\n" for row in rows)
            if torn is not None or later or path.stat().st_size != len(text.encode()):
                write_atomic(path, text)
            if path == self.metrics_path:
                kept = rows
        return kept
