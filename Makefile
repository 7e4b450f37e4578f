PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test test-pure bench bench-instructions lint venv clean constraints compiled test-compiled \
	wheels bench-instructions-compiled test-pure-subset

# Every install goes through constraints.txt: the versions CI and `make run` get are the
# ones last chosen with `make constraints`, not whatever was released overnight. That holds
# for the build requirements too (setuptools, wheel, mypy with its mypyc).
PIN := -c constraints.txt --build-constraint constraints.txt
PIP_INSTALL := $(BIN)/pip install -q $(PIN)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt --upgrade pip  # (a venv's own pip may be older)

# `make run`: install the runtime package only, then start the embedded demo. The install is
# editable, so it is always the pure-Python build (docs/compiled.md): the demo's first line says so.
run: $(BIN)/python
	$(PIP_INSTALL) -e .
	$(BIN)/bastion demo

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Most integration tests wait on real servers (ACME orders, renewals, health checks)
# rather than compute: four processes, each taking whole test files, keep two cores about
# three-quarters busy (the compiled suite: 6 min 56 s at four, 8 min 06 s at three).
TEST_JOBS ?= 4

# `make test` (what CI runs): the whole suite on the compiled build, then the unit and
# protocol tests on the pure one (docs/compiled.md, "CI"). Without a C compiler the compiled
# build cannot be made and this stops saying so: `make test-pure` runs the whole suite on
# the pure build alone.
test: test-compiled test-pure-subset

test-pure: $(STAMP)
	BASTION_EXPECT_BUILD=pure $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile tests

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# instructions per request of each policy, counted by callgrind (needs valgrind)
bench-instructions: $(STAMP)
	$(BIN)/python bench/instructions.py

# The compiled build (docs/compiled.md): a wheel of this checkout with the request path
# compiled by mypyc, installed with [dev] into a venv of its own. Not editable: the checkout's
# sources never sit beside compiled modules that would shadow them, and the tests, run from
# here without PYTHONPATH, import the installed package (src/ is not on sys.path).
CVENV := .venv-compiled
CBIN := $(CVENV)/bin

$(CBIN)/python:
	$(PY) -m venv $(CVENV)
	$(CBIN)/pip install -q -c constraints.txt --upgrade pip

# The wheel is built from a venv of its own, made afresh: mypyc's type check looks in the
# building interpreter's site-packages too, and what it finds there (pydantic, say, once
# .venv-compiled holds [dev]) would change what is checked and compiled from one build to
# the next. An empty one gives every build, a CI machine's first included, the same view.
BUILD_VENV := .venv-build

compiled: $(CBIN)/python
	rm -rf build dist/compiled $(BUILD_VENV)
	$(PY) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install -q -c constraints.txt --upgrade pip
	$(BUILD_VENV)/bin/pip wheel -q --no-deps $(PIN) -w dist/compiled .
	rm -rf $(BUILD_VENV)
	$(CBIN)/pip install -q $(PIN) --force-reinstall --no-deps dist/compiled/bastion-*.whl
	$(CBIN)/pip install -q $(PIN) "$$(ls dist/compiled/bastion-*.whl)[dev]"
	env -u PYTHONPATH $(CBIN)/bastion --version | grep -q 'compiled (mypyc)' || \
	  { echo "make compiled: no compiled build (is a C compiler installed? gcc and the" \
	    "Python headers; \`make test-pure\` tests the pure build alone)" >&2; exit 1; }

# the whole suite against the compiled build; tests/unit/test_build.py checks that it is
test-compiled: compiled
	env -u PYTHONPATH BASTION_EXPECT_BUILD=compiled \
	  $(CBIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile tests

# the pure build's share when CI runs the whole suite on the compiled one (docs/compiled.md):
# the same sources, so the unit and protocol tests check that nothing depends on compiling
test-pure-subset: $(STAMP)
	BASTION_EXPECT_BUILD=pure $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile \
	  tests/unit tests/protocol

# the two wheels of docs/compiled.md, into dist/: pure (py3-none-any) and compiled
wheels:
	rm -rf build dist/pure dist/compiled $(BUILD_VENV)
	$(PY) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install -q -c constraints.txt --upgrade pip
	BASTION_PURE=1 $(BUILD_VENV)/bin/pip wheel -q --no-deps $(PIN) -w dist/pure .
	$(BUILD_VENV)/bin/pip wheel -q --no-deps $(PIN) -w dist/compiled .
	rm -rf $(BUILD_VENV)
	ls dist/pure dist/compiled

# bench-instructions with the compiled build (BENCH_ARGS: e.g. `bare`)
bench-instructions-compiled: compiled $(STAMP)
	env -u PYTHONPATH $(BIN)/python bench/instructions.py --bastion $(CBIN)/bastion $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(CVENV) build dist *.egg-info src/*.egg-info

# Re-pin the toolchain on purpose: resolve pyproject.toml's ranges afresh in a scratch venv and
# write what it installed to constraints.txt (review the diff, run `make test`, commit).
constraints:
	rm -rf .venv-pin
	$(PY) -m venv .venv-pin
	.venv-pin/bin/pip install -q --upgrade pip setuptools wheel
	.venv-pin/bin/pip install -q -e '.[dev]' 'mypy[mypyc]'
	{ sed -n '1,/^#   make constraints/p' constraints.txt; \
	  .venv-pin/bin/pip freeze --all --exclude-editable | grep -v '^bastion'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-pin
