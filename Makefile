# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit integration e2e bench install prometheus clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The real Prometheus server, from the Debian package, for the analysis tests and the demo.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing the Debian package prometheus"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

demo: install prometheus
	$(BIN)/shepherd demo

lint: install
	$(BIN)/ruff check --no-cache operator tests bench
	$(BIN)/ruff format --no-cache --check operator tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q tests/unit

integration: install prometheus
	$(BIN)/pytest -q tests/integration

e2e: install
	$(BIN)/pytest -q tests/e2e

test: install prometheus lint typecheck
	$(BIN)/pytest -q -rs -p no:cacheprovider tests

bench: install prometheus
	$(BIN)/python bench/reconcile_cost.py
	$(BIN)/python bench/rollback_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
