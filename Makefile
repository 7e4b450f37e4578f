PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test bench bench-instructions lint venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `make run`: install the runtime package only, then start the embedded demo.
run: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/bastion demo

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Most integration tests wait on real servers (ACME orders, renewals, health checks)
# rather than compute: three processes, each taking whole test files, halve the wall time.
TEST_JOBS ?= 3

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile tests

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# instructions per request of each policy, counted by callgrind (needs valgrind)
bench-instructions: $(STAMP)
	$(BIN)/python bench/instructions.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
