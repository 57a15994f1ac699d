# `make test` is the one command CI runs: it builds .venv from nothing and runs the suite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-serving bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# torch first, pinned to the CPU wheel on disk: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,eval]"
	touch $(STAMP)

venv: $(STAMP)

# The suite in TEST_WORKERS processes (pytest-xdist), a test file per worker at a time: each test runs on one
# thread (tests/conftest.py), so two workers use both cores of the CI machine. TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Opt-in: serve pruned tiny checkpoints in vLLM (CPU) and llama.cpp and compare greedy tokens with transformers.
# Installs both engines once into $$HYBRIDPRUNE_SERVING_CACHE (default ~/.cache/hybridprune-serving; the
# llama.cpp build takes ~20 min on 2 cores), then tens of minutes; docs/serving.md is rendered from the run.
test-serving: $(STAMP)
	nice -n 19 scripts/serving/install_engines.sh all
	$(BIN)/python -m pytest -m serving tests/serving -p no:cacheprovider; status=$$?; \
	$(BIN)/python scripts/serving/render_matrix.py; exit $$status

bench: $(STAMP)
	$(BIN)/python bench/calibration_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
