"""(c) A live JupyterLab on 127.0.0.1: a notebook builds a TokenView from a cpu-smoke run, runs in
chromium, the widget renders from the package's own ES module (every request outside the server is
blocked), and hovering a token shows its tooltip. Every process started is stopped by its PID."""

from __future__ import annotations

import os
import json
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

CELLS = [
    "from fipo_nb.presets import apply_overrides, get_preset\n"
    "from fipo_nb.trainer import FIPOTrainer\n"
    "config = apply_overrides(get_preset('cpu-smoke'), ['output_dir=run', 'save_every=-1'])\n"
    "FIPOTrainer(config).train(2, progress=False);",
    "from fipo_nb.widgets import TokenView\nview = TokenView.from_run('run')\nview",
]


def stop(pid: int) -> None:
    """SIGTERM, then SIGKILL, to one process by its PID."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (a kernel): poll it
            finished = 0 if Path(f"/proc/{pid}").exists() else pid
        if finished:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def kernel_pids(runtime: Path) -> list[int]:
    """PIDs of kernels whose connection file lives in this test's runtime folder."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(runtime) in cmdline and "ipykernel" in cmdline:
                pids.append(int(proc.name))
    return pids


@pytest.fixture
def jupyterlab(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "live.ipynb")
    token = secrets.token_hex(16)
    runtime = tmp_path / "runtime"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               FIPO_NB_SMOKE="1")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.port=0", "--ServerApp.port_retries=0",  # the server picks a free port and reports it
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.expose_app_in_browser=True"],  # window.jupyterapp: run the cells by command, not by clicks
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    info = runtime / f"jpserver-{server.pid}.json"  # written once the server listens: its real port
    try:
        for _ in range(480):
            try:
                base = f"http://127.0.0.1:{json.loads(info.read_text())['port']}"
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except (OSError, ValueError, KeyError):  # not written yet, half written, or not answering yet
                if server.poll() is not None:
                    raise RuntimeError((tmp_path / "jupyterlab.log").read_text())
                time.sleep(0.25)
        else:
            raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text())
        yield base, token, tmp_path / "jupyterlab.log"
    finally:
        kernels = kernel_pids(runtime)
        stop(server.pid)
        for pid in kernels + kernel_pids(runtime):
            stop(pid)
        log.close()
        assert server.poll() is not None and not kernel_pids(runtime)


def notebook_state(page) -> str:
    """What the notebook shows: each cell's prompt and output text (for a failure's message)."""
    return page.evaluate("""() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map((cell, i) => {
        const prompt = cell.querySelector('.jp-InputPrompt')?.innerText ?? '';
        const out = [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n');
        return `cell ${i} ${prompt}\\n${out.slice(-3000)}`;
    }).join('\\n')""")


def test_token_view_renders_live_in_jupyterlab(page, jupyterlab, artifacts):
    base, token, log = jupyterlab
    outside = []

    def local_only(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(f"{base}/lab/tree/live.ipynb?token={token}", timeout=120_000)
    page.locator(".jp-Notebook").wait_for(timeout=120_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands.hasCommand('notebook:run-all-cells')",
                           timeout=120_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=300_000)

    def run_all():  # the command acts on the current notebook: a click on a cell makes it current
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    run_all()
    prompts = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt")
    asked = time.monotonic()
    tokens = page.locator(".fipo-tokenview .fipo-text .fipo-tok")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] .ansi-red-fg")
    deadline = time.monotonic() + 480  # a loaded 2-core machine: kernel start, torch import, two steps
    while not tokens.first.is_visible():
        failed = errors.count() > 0
        if failed or time.monotonic() > deadline:
            page.screenshot(path=str(artifacts / "jupyterlab_failure.png"))
            pytest.fail(("a cell raised" if failed else "no TokenView after 480 s") + ":\n" + notebook_state(page)
                        + "\n--- jupyterlab log (end) ---\n" + log.read_text()[-4000:])
        if time.monotonic() - asked > 30 and all(p.strip() == "[ ]:" for p in prompts.all_inner_texts()):
            run_all()  # the command found no current notebook (nothing queued): ask again
            asked = time.monotonic()
        page.wait_for_timeout(1000)
    assert tokens.count() > 1
    tokens.nth(1).hover()
    tip = page.locator(".fipo-tip")
    tip.wait_for(state="visible", timeout=10_000)
    assert tip.inner_text().startswith("#1 ") and "weight" in tip.inner_text() and "segment " in tip.inner_text()
    assert page.locator(".fipo-tokenview .fipo-seg-legend").is_visible()
    assert page.locator(".fipo-tokenview .fipo-band-seg").first.is_visible()
    token_box, tip_box = tokens.nth(1).bounding_box(), tip.bounding_box()
    assert abs(tip_box["x"] - token_box["x"]) < 80 and 0 < tip_box["y"] - token_box["y"] < 80  # beside the mouse
    shot = artifacts / "jupyterlab_tokenview.png"
    page.screenshot(path=str(shot))
    print(f"\nscreenshot: {shot}")
    assert not [url for url in outside if not url.startswith("data:")], outside
