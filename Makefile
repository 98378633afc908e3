# eventspine developer commands. `make demo` and `make test` work on a fresh machine:
# they create .venv and install everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: help venv demo test test-fast test-nightly lint fmt typecheck layers bench docs check clean

help:
	@echo "make demo          run the showcase pipeline on the embedded default"
	@echo "make test          lint + types + layers + the whole test suite (starts Kafka itself)"
	@echo "make test-nightly  also the long variants (marked slow)"
	@echo "make lint | fmt | bench | docs | check | kafka-up | kafka-down"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,kafka]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/eventspine demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples docs tools
	$(VENV)/bin/ruff format --check src tests benchmarks examples docs tools
	$(MAKE) --no-print-directory typecheck layers

typecheck: $(STAMP)
	$(VENV)/bin/mypy

layers: $(STAMP)
	$(VENV)/bin/lint-imports

fmt: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks examples docs tools
	$(VENV)/bin/ruff check --fix src tests benchmarks examples docs tools

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -m "not slow" --durations=15

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow and not kafka" -x

test-nightly: $(STAMP) lint
	$(VENV)/bin/pytest -q --durations=25

bench: $(STAMP)
	$(PY) benchmarks/run_bench.py

docs: $(STAMP)
	$(VENV)/bin/pytest -q tests/docs

check: lint test

clean:
	rm -rf $(VENV) .eventspine demo-out .mypy_cache .ruff_cache .pytest_cache .hypothesis

-include tools/kafka/kafka.mk
