# robustdd: `make demo` runs the main job on the embedded digits dataset, `make test` the tests.
# Both create a virtual environment in $(VENV) and install the package into it first.
# TORCH_SPEC picks the PyTorch build: the default is the CPU build these machines ship; on a
# CUDA machine use e.g. `make demo TORCH_SPEC="torch>=2.2"` (or install torch yourself and pass
# TORCH_SPEC= to keep it).

VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.robustdd-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	@# test-only oracle for tests/test_attacks_more.py; --no-deps: it pins requests~=2.25.1 and
	@# pulls torchvision, neither needed by the attacks compared (it also ships a stray top-level
	@# `robustbench` package, so keep it out of pyproject and out of user installs)
	$(BIN)/python -m pip install -q --no-deps torchattacks==3.5.1
	@touch $@

demo: $(STAMP)
	$(BIN)/robustdd demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
