# The two commands of the README: `make demo` (seed example) and `make test` (all tests).
# CI runs `bash .ci/run` = `make test` with CI=true, where a missing requirement fails.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pytest arguments, e.g. `make test-python PYTEST_ARGS="-k lme4"`.
PYTEST_ARGS ?=

.PHONY: demo test test-python test-r check-r r-deps venv bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/python -m pip uninstall -q -y rpy2-rinterface rpy2-robjects 2>/dev/null || true
	$(BIN)/python -m pip install -q -e ".[test]"

demo: $(BIN)/python
	$(BIN)/python -m pip install -q -e .
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
	rm -rf $(VENV) build *.egg-info python/*.egg-info .pytest_cache
