"""A run's files read back: the JSON-lines logs (metrics.jsonl, eval.jsonl) that the trainer and
the verl trace hook write, and that the views, the report and `compare` read. It lives here, below
train/ and views/, so that reading a run needs nothing from the code that trains one."""

from __future__ import annotations

import json
import warnings
from pathlib import Path


def parse_jsonl(path) -> tuple[list[dict], int | None]:
    """(rows, torn) of a JSON-lines file (([], None) if it does not exist). `torn` is the number of a
    last line cut short by a kill in the middle of its write (no newline, not JSON), left out of
    `rows`, else None. Any other broken line raises ValueError naming file and line: a row is never
    dropped silently."""
    path = Path(path)
    if not path.exists():
        return [], None
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")  # rows are ASCII (json.dumps)
    rows, torn = [], None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if number == len(lines):  # the last line, without its newline: its write was cut short
                    torn = number
                    break
                raise ValueError(f"{path}: line {number} is not JSON ({err})") from err
    return rows, torn


def read_jsonl(path) -> list[dict]:
    """Rows of a JSON-lines file ([] if it does not exist). A last line cut short (a run killed while
    writing it) is skipped with a warning naming it; any other broken line raises ValueError naming it."""
    rows, torn = parse_jsonl(path)
    if torn is not None:
        warnings.warn(f"{path}: line {torn} is cut short (the run was stopped while writing it): skipped",
                      stacklevel=2)
    return rows


def read_metrics(run_dir) -> list[dict]:
    """The rows of RUN_DIR/metrics.jsonl; a missing file raises FileNotFoundError saying what the
    folder is instead (a comparison, or no run at all), a broken line ValueError naming file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        if (Path(run_dir) / "compare.html").exists():  # `fipo-nb compare`'s folder holds one run per loss
            runs = sorted(p.parent.name for p in Path(run_dir).glob("*/metrics.jsonl"))
            raise FileNotFoundError(f"{run_dir} is a comparison: open {Path(run_dir) / 'compare.html'}, or report one "
                                    f"of its runs ({', '.join(str(Path(run_dir) / r) for r in runs)})")
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}" + ("" if Path(run_dir).is_dir() else
                                                                     ": no such folder"))
    return read_jsonl(path)
