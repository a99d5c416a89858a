# The README's two commands: `make serve` and `make test`.
# consent/ and retention/ are the compliance surface: the suite covers every branch of them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes: the suite is mostly waiting, so more than the 2 cores pays.
TEST_WORKERS ?= 4

LOCK := requirements-lock.txt
# Some machines set PYTHONDONTWRITEBYTECODE: every test process and every server a test starts
# would then compile its modules (and pytest rewrite its asserts) from source again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: serve test lint typecheck pytest bench clean lock

# Every package, pip and setuptools included, comes from the lock at its pinned version and hash:
# pip-sync installs exactly what it names and removes the rest, then pixelgate itself is built
# with the locked setuptools. pip check fails if the lock misses a requirement of pixelgate's.
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/pip-sync
	$(BIN)/pip-sync --quiet $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

# pip-tools (pip-sync, pip-compile) comes from the lock too, with the rest of it.
$(BIN)/pip-sync:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)

# Re-resolves runtime + dev (and the build backend) from pyproject.toml for this Python (3.11,
# linux x86_64), keeping the pins that still fit; LOCK_ARGS=--upgrade takes the newest releases.
# It needs only pip-compile, not a .venv that already matches pyproject.toml.
lock: | $(BIN)/pip-sync
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --extra dev --all-build-deps \
	    --allow-unsafe --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	    --output-file $(LOCK) $(LOCK_ARGS) pyproject.toml

serve: $(STAMP)
	$(BIN)/pixelgate serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# tests/own_coverage.py measures consent/ and retention/ during their own tests only; each test
# process leaves a data file, combined and held to 100 % here. `python -m` puts the repository
# on sys.path, where -p finds the plugin.
pytest: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadgroup -p tests.own_coverage $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report --show-missing --skip-covered --fail-under=100

test: lint typecheck pytest

# Each scenario is a module of bench/ (bench/README.md), run from the repository root.
bench: $(STAMP)
	$(BIN)/python -m bench.pixel_throughput
	$(BIN)/python -m bench.retention_purge
	$(BIN)/python -m bench.reports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
