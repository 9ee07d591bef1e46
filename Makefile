# Two entry points (see README): `make quickstart` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Everything in one pip call, so that torch resolves to the local CPU build (torch is capped at 2.13.0).
EXTRAS ?= ray,embed,notebooks,dev

.PHONY: setup quickstart test lint format clean

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

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf artifacts mlartifacts mlflow.db .pytest_cache
