# The developer's loop. Each target runs in the project's .venv (scripts/venv.sh makes it
# on first use, pinned by requirements/lock.txt). `make test` is what CI runs.
.PHONY: help lint format type test-fast test bench up docs

VENV_SETUP = source scripts/venv.sh '.[api,worker,ui,test,embedded]'
SHELL := /bin/bash

help:
	@echo "make lint       ruff: lint and check the formatting"
	@echo "make format     ruff: format the tree"
	@echo "make type       mypy, strict"
	@echo "make test-fast  the unit tests: no process started, no model loaded (under a minute)"
	@echo "make test       lint, types and the whole suite (what CI runs)"
	@echo "make bench      the CPU benchmarks (python -m bench; bench/gpu.py on a GPU)"
	@echo "make up         the whole stack locally, with a first image (darkroom up)"
	@echo "make docs       regenerate docs/configuration.md's table from Settings"

lint:
	@$(VENV_SETUP) && python -m ruff check . && python -m ruff format --check .

format:
	@$(VENV_SETUP) && python -m ruff format . && python -m ruff check --fix .

type:
	@$(VENV_SETUP) && python -m mypy

test-fast:
	@$(VENV_SETUP) && python -m pytest -m "not e2e and not slow" -q

test:
	@bash scripts/test.sh

bench:
	@$(VENV_SETUP) && python -m bench

up:
	@bash scripts/up.sh

docs:
	@$(VENV_SETUP) && python -m shared.settings_doc
