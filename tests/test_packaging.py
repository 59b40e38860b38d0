"""The project sets itself up: pyproject, environment.yml, Makefile and CI agree."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    project = pyproject()["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {line for line in pip_section if not line.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert "-e ." in pip_section


def test_torch_requirement_is_met_by_the_pinned_cpu_wheel():
    torch_req = next(Requirement(r) for r in pyproject()["project"]["dependencies"] if r.startswith("torch"))
    assert torch_req.specifier, "an unpinned torch pulls a multi-GB CUDA build"
    assert Version("2.13.0") in torch_req.specifier


def test_makefile_installs_pinned_torch_before_the_package():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH := torch==2.13.0" in makefile
    assert makefile.index('"$(TORCH)"') < makefile.index('-e ".[test]"')
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "test: $(STAMP) system-deps" in makefile  # chromium for the browser tests comes with `make test`
    assert "apt-get install -y chromium" in (ROOT / "scripts" / "install_system_deps.sh").read_text()


def test_console_script_prints_the_default_config():
    assert pyproject()["project"]["scripts"]["fipo-nb"] == "fipo_nb.cli:main"
    out = subprocess.run([sys.executable, "-m", "fipo_nb.cli", "config"], capture_output=True, text=True, check=True)
    assert '"decay_rate": 32.0' in out.stdout and '"loss": "fipo"' in out.stdout
