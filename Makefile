# The two commands of the README: `make demo` (seed example) and `make test` (all tests).
# CI runs `bash .ci/run` = `make test` with CI=true, where a missing requirement fails.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pytest arguments, e.g. `make test-python PYTEST_ARGS="-k lme4"`.
PYTEST_ARGS ?=
# The test environment, every package pinned (regenerate with `make lock`).
LOCK   := requirements/test.lock

.PHONY: demo test test-latest test-python test-r check-r r-deps venv lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The pinned test environment, then lmmscope itself (editable, no dependency resolution);
# `pip check` fails the target on any inconsistent pair.
venv: $(BIN)/python
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check

# Re-resolve the test extra to the newest versions the index offers, for this Python.
lock: $(BIN)/python
	$(BIN)/python -m pip install -q uv
	$(BIN)/python -m uv pip compile -q pyproject.toml --extra test --no-header --upgrade \
	    --python-version $$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
	    -o $(LOCK)

# The same suite against the newest versions the index offers (no lock), in .venv-latest.
test-latest: r-deps
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q --upgrade -e ".[test]"
	.venv-latest/bin/python -m pip check
	$(MAKE) test-python test-r check-r VENV=.venv-latest

# lmmscope with statsmodels (the comparison the demo prints), at the lock's versions
demo: $(BIN)/python
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[demo]"
	$(BIN)/lmmscope demo

r-deps:
	bash .ci/install-r.sh

test: r-deps venv test-python test-r check-r

# pytest's own exit code reaches make: failures (1), errors (2-4) and an empty run (5)
# all fail the target.
test-python:
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-r:
	RETICULATE_PYTHON=$(abspath $(BIN)/python) bash .ci/test-r.sh

check-r:
	RETICULATE_PYTHON=$(abspath $(BIN)/python) bash .ci/check-r.sh

bench: venv
	$(BIN)/python bench/vs_seed.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/vs_lme4.py
	$(BIN)/python bench/coverage.py

clean:
	rm -rf $(VENV) .venv-latest build *.egg-info python/*.egg-info .pytest_cache
