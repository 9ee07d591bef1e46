# Two entry points (see README): `make quickstart` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Everything in one pip call, so that torch resolves to the local CPU build (torch is capped at 2.13.0).
EXTRAS ?= ray,embed,notebooks,dev

.PHONY: setup quickstart test lint format clean figures notebooks-clear

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(PY) -m pipelines quickstart

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

# The README's figures (docs/figures/*.png) from the tiny presets, as notebooks 01-03 draw them. One BLAS/OpenMP
# thread: on tiny data more threads only wait for each other (and spin on a busy machine).
figures: setup
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pipelines figures --output docs/figures

# Strip outputs and execution counts from notebooks/*.ipynb before committing (a test fails on outputs).
notebooks-clear: setup
	$(PY) notebooks/clear_outputs.py

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf artifacts mlartifacts mlflow.db .pytest_cache
