# Two commands: `make test` (set up .venv if needed, then run the whole suite) and `make demo`
# (set up .venv if needed, then a few FIPO steps on SmolLM2-135M offline, ending with runs/demo/report.html).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fipo-nb-installed
TORCH := torch==2.13.0

.PHONY: setup system-deps test demo bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned: an unpinned torch (or a package asking for one) pulls a CUDA build.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

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
