# Two commands: `make test` (set up .venv if needed, then run the whole suite) and `make demo`
# (set up .venv if needed, then a few FIPO steps on SmolLM2-135M offline, ending with runs/demo/report.html).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.fipo-nb-installed
TORCH := torch==2.13.0
# where torch comes from: pip's own index by default; on Linux x86-64 PyPI's torch is the CUDA build, so pass
# TORCH_INDEX=https://download.pytorch.org/whl/cpu where pip does not offer the CPU wheel itself
TORCH_INDEX ?=
LOCK := requirements.lock
RETRY := bash scripts/retry.sh 3
# Wheels only: nothing is built from source (reasoning-gym, whose pycosat is C sources on PyPI, is the
# optional extra `gym`, not installed here).
WHEELS_ONLY := --only-binary=:all:

VERL_VENV := .venv-verl
VERL_STAMP := $(VERL_VENV)/.fipo-nb-verl-installed
VERL := verl[verl-core]==0.9.1

.PHONY: setup verl-venv system-deps test demo images bench lock clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned: an unpinned torch (or a package asking for one) pulls a CUDA build.
# Then the lock's exact versions, wheels only (a new dependency without a wheel fails here instead of
# compiling), then fipo_nb itself, editable, with the lock as constraints. Each step is retried after
# a network hiccup.
$(STAMP): pyproject.toml $(LOCK) Makefile | $(BIN)/python
	$(RETRY) $(PIP) install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(RETRY) $(PIP) install --quiet $(WHEELS_ONLY) -r $(LOCK)
	$(RETRY) $(PIP) install --quiet $(WHEELS_ONLY) -c $(LOCK) -e ".[test,trl]"
	touch $(STAMP)

# Rewrite requirements.lock and requirements-verl.lock in fresh venvs (then commit them).
lock:
	bash scripts/lock.sh
	bash scripts/lock.sh verl

# verl 0.9.1 pins transformers < 5.11, so it gets its own venv: the CPU torch first, then the exact versions of
# requirements-verl.lock (verl[verl-core] and what the verl tests use; its vllm/sglang/fsdp extras would pull
# torch 2.11 and are not needed on a CPU), wheels only but for antlr4-python3-runtime (pure-Python sources:
# nothing compiles), then fipo_nb without its heavy dependencies. tests/test_verl_integration.py runs
# tests/integrations/verl there.
VERL_WHEELS_ONLY := --only-binary=:all: --no-binary=antlr4-python3-runtime
$(VERL_STAMP): pyproject.toml requirements-verl.lock Makefile
	test -x $(VERL_VENV)/bin/python || $(PYTHON) -m venv $(VERL_VENV)
	echo "$(TORCH)" > $(VERL_VENV)/torch-pin.txt
	$(RETRY) $(VERL_VENV)/bin/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(RETRY) $(VERL_VENV)/bin/python -m pip install --quiet $(VERL_WHEELS_ONLY) -r requirements-verl.lock -c $(VERL_VENV)/torch-pin.txt
	$(RETRY) $(VERL_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(VERL_STAMP)

verl-venv: $(VERL_STAMP)

# `make test` builds .venv-verl too: tests/test_verl_integration.py runs the verl tests there
test: $(VERL_STAMP)

# Debian's chromium for the browser tests (apt-get, as root); nothing to do once it is there.
system-deps:
	bash scripts/install_system_deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/fipo-nb demo --out runs/demo

# The README's pictures (docs/images/*.png) from a real demo run: `make demo` first when runs/demo has none.
# Headless chromium, offline: nothing fetched, nothing served (scripts/render_images.py).
images: $(STAMP) system-deps
	test -f runs/demo/metrics.jsonl || $(MAKE) demo
	$(BIN)/python scripts/render_images.py --run runs/demo --out docs/images

bench: $(STAMP)
	$(BIN)/python benchmarks/future_kl.py
	$(BIN)/python benchmarks/logprobs.py
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf $(VENV) $(VERL_VENV) .pytest_cache .hypothesis
