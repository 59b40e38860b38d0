"""A run's files read back: the JSON-lines logs (metrics.jsonl, eval.jsonl) that the trainer and
the verl trace hook write, and that the views, the report and `compare` read. It lives here, below
train/ and views/, so that reading a run needs nothing from the code that trains one."""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path) -> list[dict]:
    """Rows of a JSON-lines file ([] if it does not exist); a broken line raises ValueError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not JSON ({err})") from err
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
