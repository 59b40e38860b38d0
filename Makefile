# Two commands: `make test` (set up .venv if needed, then run the whole suite) and `make demo`
# (set up .venv if needed, then a few FIPO steps on SmolLM2-135M offline, ending with runs/demo/report.html).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.fipo-nb-installed
TORCH := torch==2.13.0
LOCK := requirements.lock
RETRY := bash scripts/retry.sh 3
# Wheels only: nothing is built from source (reasoning-gym, whose pycosat is C sources on PyPI, is the
# optional extra `gym`, not installed here).
WHEELS_ONLY := --only-binary=:all:

.PHONY: setup system-deps test demo bench lock clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned: an unpinned torch (or a package asking for one) pulls a CUDA build.
# Then the lock's exact versions, wheels only (a new dependency without a wheel fails here instead of
# compiling), then fipo_nb itself, editable, with the lock as constraints. Each step is retried after
# a network hiccup.
$(STAMP): pyproject.toml $(LOCK) Makefile | $(BIN)/python
	$(RETRY) $(PIP) install --quiet "$(TORCH)"
	$(RETRY) $(PIP) install --quiet $(WHEELS_ONLY) -r $(LOCK)
	$(RETRY) $(PIP) install --quiet $(WHEELS_ONLY) -c $(LOCK) -e ".[test,trl]"
	touch $(STAMP)

# Rewrite requirements.lock from pyproject.toml in a fresh venv (then commit it).
lock:
	bash scripts/lock.sh

# Debian's chromium for the browser tests (apt-get, as root); nothing to do once it is there.
system-deps:
	bash scripts/install_system_deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/fipo-nb demo --out runs/demo

bench: $(STAMP)
	$(BIN)/python benchmarks/future_kl.py
	$(BIN)/python benchmarks/logprobs.py
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
