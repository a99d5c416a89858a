"""A pytest plugin (`-p tests.own_coverage`, as `make test` loads it): consent/ and retention/
are measured only while their own tests run, and each test process saves a data file for
`coverage combine`.

Their 100 % coverage is their own tests' to earn. Every other test runs with no tracer at
all: tracing them as well covered nothing more, and pytest-cov, even paused around them,
still made them slower. Loaded with -p, the plugin starts before conftest.py imports the
packages, so their import-time lines count too."""

from collections.abc import Generator

import coverage
import pytest

COVERAGE_COMES_FROM = ("tests/consent/", "tests/retention/")
# Settings from [tool.coverage.run]; one data file per test process.
OWN = coverage.Coverage(data_suffix=True)


def pytest_load_initial_conftests() -> None:
    OWN.start()


def pytest_collection_finish() -> None:
    OWN.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    if not item.nodeid.startswith(COVERAGE_COMES_FROM):
        return (yield)
    OWN.start()
    try:
        return (yield)
    finally:
        OWN.stop()


def pytest_unconfigure() -> None:
    OWN.save()
