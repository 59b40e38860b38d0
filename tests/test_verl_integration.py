"""The verl tests run in their own environment (.venv-verl: verl 0.9.1 pins an older transformers), and the
run directory they write through verl's loss path opens in fipo_nb's widgets and report like any other."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERL_PYTHON = ROOT / ".venv-verl" / "bin" / "python"


@pytest.mark.slow
def test_verl_suite_passes_and_its_run_opens_in_the_views(tmp_path):
    if not VERL_PYTHON.exists():
        message = f"{VERL_PYTHON} is missing: `make verl-venv` (or `make test`) creates it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run = tmp_path / "verl-run"
    env = {**os.environ, "FIPO_NB_VERL_RUN_DIR": str(run), "PYTHONPATH": str(ROOT)}
    # tests/test_rewards_dapo.py too: there its differential check against verl's own math_dapo scorer runs;
    # and the compact decode loop on verl's older transformers (5.10: the KV cache goes by past_key_values)
    done = subprocess.run([str(VERL_PYTHON), "-m", "pytest", "tests/integrations/verl", "tests/test_rewards_dapo.py",
                           "tests/test_rollout.py::test_compact_backend_draws_the_same_samples_as_generate",
                           "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::UserWarning"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1]

    from fipo_nb.report import write_report
    from fipo_nb.widgets import PhaseView, TokenView

    view = TokenView.from_run(run)
    assert "</span>" in view.to_html() and "mini-batch" in view.to_html()
    phases = PhaseView.from_run(run)
    assert "superficial planning" in phases.to_html()
    page = write_report(run).read_text()
    assert "Token influence" in page and ">Answer<" in page and "<script" not in page  # a traced written answer


def test_make_test_builds_the_verl_venv_with_torch_pinned_first():
    makefile = (ROOT / "Makefile").read_text()
    assert "test: $(VERL_STAMP)" in makefile and "VERL := verl[verl-core]==0.9.1" in makefile
    recipe = makefile[makefile.index("$(VERL_STAMP): "):makefile.index("verl-venv: $(VERL_STAMP)")]
    torch = recipe.index('install --quiet "$(TORCH)"')
    verl = recipe.index("-r requirements-verl.lock -c $(VERL_VENV)/torch-pin.txt")
    assert torch < verl < recipe.index("--no-deps -e .")  # CPU torch first, the lock with torch pinned, then fipo_nb
    lock = (ROOT / "requirements-verl.lock").read_text()
    assert "\nverl==0.9.1\n" in lock and "\ntorch==2.13.0\n" in lock
