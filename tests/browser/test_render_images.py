"""scripts/render_images.py (`make images`): the README's pictures from a real run, in chromium, offline."""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
from pathlib import Path

from fipo_nb.trace import load_traces
from fipo_nb.views.records import reweighted_first, view_records

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render_images.py"


def render_images():
    spec = importlib.util.spec_from_file_location("render_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_pictures_of_a_run_are_small_pngs_of_the_token_view_and_the_report(smoke_run, tmp_path):
    # its own process, as `make images` runs it (the session's browser fixture holds playwright in this one)
    done = subprocess.run([sys.executable, str(SCRIPT), "--run", str(smoke_run), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    width, height = png_size(tmp_path / "token_view.png")
    assert width == 1800 and height > 200  # 900 CSS px at twice the pixels
    width, height = png_size(tmp_path / "report.png")
    assert width == 1180 and height > 800  # curves, phases and the first token view
    for name in ("token_view.png", "report.png"):
        assert (tmp_path / name).stat().st_size < 300_000
    first = reweighted_first(view_records(load_traces(smoke_run)))[0]  # where TokenView.from_run opens
    assert first["mini_batch"] > 0 and first["advantage"] != 0
    assert f"step {first['step']}, sample {first['sample']}, mini-batch {first['mini_batch']}" in done.stdout
