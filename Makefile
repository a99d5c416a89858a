# The README's two commands: `make serve` and `make test`.
# consent/ and retention/ are the compliance surface: the suite covers every branch of them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes: the suite is mostly waiting, so more than the 2 cores pays.
TEST_WORKERS ?= 4

.PHONY: serve test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/pixelgate serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -rs -n $(TEST_WORKERS) --cov=consent --cov=retention --cov-fail-under=100 --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

test: lint typecheck pytest

# Each scenario is a module of bench/ (bench/README.md), run from the repository root.
bench: $(STAMP)
	$(BIN)/python -m bench.pixel_throughput
	$(BIN)/python -m bench.retention_purge

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
