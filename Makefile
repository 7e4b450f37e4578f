PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test bench bench-instructions lint venv clean constraints

# Every install goes through constraints.txt: the versions CI and `make run` get are the
# ones last chosen with `make constraints`, not whatever was released overnight.
PIP_INSTALL := $(BIN)/pip install -q -c constraints.txt

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

# `make run`: install the runtime package only, then start the embedded demo.
run: $(BIN)/python
	$(PIP_INSTALL) -e .
	$(BIN)/bastion demo

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e '.[dev]'
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
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# Re-pin the toolchain on purpose: resolve pyproject.toml's ranges afresh in a scratch venv and
# write what it installed to constraints.txt (review the diff, run `make test`, commit).
constraints:
	rm -rf .venv-pin
	$(PY) -m venv .venv-pin
	.venv-pin/bin/pip install -q --upgrade pip
	.venv-pin/bin/pip install -q -e '.[dev]'
	{ sed -n '1,/^#   make constraints/p' constraints.txt; \
	  .venv-pin/bin/pip freeze --exclude-editable | grep -v '^bastion'; \
	  echo "pip==$$(.venv-pin/bin/pip --version | cut -d' ' -f2)"; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-pin
