"""Tests that need verl 0.9.1: they run in `.venv-verl` (made by `make .venv-verl`), driven by
tests/test_verl_integration.py from the main suite. In an environment without verl they are not collected."""

import importlib.util
import sys
from pathlib import Path

collect_ignore_glob = [] if importlib.util.find_spec("verl") else ["test_*.py"]

# the CPU run through verl's loss path (examples/verl_tiny_run.py) that these tests drive and notebook 05 shows
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
