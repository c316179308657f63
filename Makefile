# Every target sets up what it needs on a fresh machine: a virtual environment with Refluent and
# its dev extras, and Debian's redis-server for the embedded services.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.refluent-installed
PYTEST_ARGS ?=
# The service-backed tiers run on this many pytest-xdist workers, each with its own broker and
# Redis; they mostly wait on I/O, so two workers fit a 2-core machine.
WORKERS ?= 2
TORCH_VERSION ?= 2.13.0

.PHONY: demo test test-fast lint bench setup services-deps clean

demo: setup  ## run the end-to-end demo on the embedded services
	$(VENV)/bin/refluent demo

test: setup lint  ## lint, type-check and run every test tier
	$(PY) -m pytest -m "unit or contract or property" -q $(PYTEST_ARGS)
	$(PY) -m pytest -m "integration or e2e" -q -n $(WORKERS) $(PYTEST_ARGS)
	$(PY) -m pytest --doctest-modules refluent -q -p no:randomly

test-fast: setup  ## unit, contract and property tests only (seconds, no services)
	$(PY) -m pytest -m "unit or contract or property" -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check refluent tests bench
	$(VENV)/bin/mypy

bench: setup  ## the benchmarks, printing JSON
	for b in bench/*.py; do $(PY) $$b; done

setup: $(STAMP) services-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

services-deps:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

clean:
	rm -rf $(VENV) .refluent .pytest_cache .mypy_cache .ruff_cache .hypothesis
