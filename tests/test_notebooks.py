"""Every tutorial notebook executes headless, top to bottom, without an error."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_error(path, tmp_path, monkeypatch):
    # notebooks read FIPO_NB_SMOKE to pick their smallest setting, and write under their cwd
    monkeypatch.setenv("FIPO_NB_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 1, f"{path.name} drew no figure"
    # the saved outputs show the final state: no progress bar saved as a widget frozen where it was displayed,
    # no transformers loading bar, no dashboard fallback that still reads "no steps yet"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    plain = [o.get("data", {}).get("text/plain", "") for o in outputs]
    assert not [t for t in plain if re.search(r"\d+%\|", t)], f"{path.name}: a progress bar saved as a widget"
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Loading weights" not in streams, f"{path.name}: transformers' loading bar in the output"
    assert not any("no steps yet" in o.get("data", {}).get("text/html", "") for o in outputs)
    for cell in nb.cells:  # a text bar (ours, on stderr) is saved with every update, in as many stream outputs as
        # the kernel sent messages: across a cell's stderr, its last state reads 100%
        stderr = "".join(o.text for o in cell.get("outputs", []) if o.output_type == "stream" and o.name == "stderr")
        bars = re.findall(r"\d+%\|[^\r\n]*", stderr)
        assert not bars or bars[-1].startswith("100%"), f"{path.name}: a bar that stopped at {bars[-1]}"
