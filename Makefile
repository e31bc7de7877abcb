# Everyday commands for contributors (`make help` lists them). PYTHON is the project's virtual environment when it
# exists (.venv, as in the README), else python3; override it with `make test PYTHON=/path/to/python`.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: help lint format typecheck test test-fast check

help:
	@echo "make lint       ruff check on src, tests and scripts (what tests/test_lint.py runs)"
	@echo "make format     ruff format on src, tests and scripts"
	@echo "make typecheck  mypy --strict on src/discopatch (the [tool.mypy] settings in pyproject.toml)"
	@echo "make test       the whole suite: the README's test command"
	@echo "make test-fast  the suite without the tests marked slow (pytest -m 'not slow')"
	@echo "make check      lint, typecheck and test-fast: what to run before a commit"

lint:
	$(PYTHON) -m ruff check src tests scripts

format:
	$(PYTHON) -m ruff format src tests scripts

typecheck:
	$(PYTHON) -m mypy --strict

test:
	$(PYTHON) -m pytest

test-fast:
	$(PYTHON) -m pytest -m "not slow"

check: lint typecheck test-fast
