"""A real browser for the view tests: Debian's chromium, driven by playwright-python.

The project's own set-up (`make test`) installs chromium; `playwright install` is never run.
Screenshots go to runs/test-artifacts/ (not committed).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "test-artifacts"


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Three cpu-smoke steps with traces (post-update Future-KL too)."""
    from fipo_nb.presets import apply_overrides, get_preset
    from fipo_nb.trainer import FIPOTrainer

    out = tmp_path_factory.mktemp("smoke-run")
    config = apply_overrides(get_preset("cpu-smoke"), [f"output_dir={out}", "trace_post_update=true",
                                                       "save_every=-1"])
    FIPOTrainer(config, reward_fn=lambda p, r, s: float(sum(map(ord, r)) % 2)).train(3, progress=False)
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture
def static_server(tmp_path):
    """Serve tmp_path on 127.0.0.1 (ES modules do not load from file:// URLs); yields (folder, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    shutil.rmtree(tmp_path, ignore_errors=True)
