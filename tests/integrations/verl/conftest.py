"""Tests that need verl 0.9.1: they run in `.venv-verl` (made by `make .venv-verl`), driven by
tests/test_verl_integration.py from the main suite. In an environment without verl they are not collected."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("verl") else ["test_*.py"]
