"""Storage tests run on a real SQLite file and on a real, throwaway PostgreSQL database."""

import asyncio
import logging
import logging.config
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import TestClient

from app.base.db import migrate
from app.base.settings import Settings
from app.main import create_app
from tests.factories import dump_database, forbidden_strings, settings_for, spools
from tests.servers import kill_every_server

PG_HOST = os.environ.get("PIXELGATE_TEST_PG", "postgres@127.0.0.1:5432")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class LogRecorder(logging.Handler):
    """Keeps every log line of the run, to search it for raw identifiers at the end."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


LOGS = LogRecorder()


def _record_every_log_line() -> None:
    root = logging.getLogger()
    if LOGS not in root.handlers:
        root.addHandler(LOGS)
    root.setLevel(logging.DEBUG)


# Every Litestar app applies its logging configuration through dictConfig, which replaces the
# root logger's handlers and level: the recorder is put back each time, or the search at the
# end would only see what was logged before the first app was built.
_dict_config = logging.config.dictConfig


def _dict_config_keeping_the_recorder(config: dict[str, Any]) -> None:
    _dict_config(config)
    _record_every_log_line()


logging.config.dictConfig = _dict_config_keeping_the_recorder
_record_every_log_line()
# The test client's own request lines quote the URLs the tests send; they are not the app's.
# The drivers' debug lines are every statement they run, slowing the suite to a crawl: what
# they bind is in the database, which is searched too.
for library in ("httpx", "httpcore", "aiosqlite", "asyncio", "faker"):
    logging.getLogger(library).setLevel(logging.WARNING)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: in several processes they then run beside the many short ones,
    not alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(f"postgresql://{PG_HOST}/test", timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _assert_nothing_raw(where: str, text: str) -> None:
    leaked = sorted(s for s in forbidden_strings() if s in text)
    assert not leaked, f"raw identifiers found in {where}: {leaked}"


@contextmanager
def _throwaway_postgresql(migrated: bool = True) -> Iterator[str]:
    name = f"pixelgate_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_HOST} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_HOST}: {exc}")
    url = f"postgresql+asyncpg://{PG_HOST}/{name}"
    try:
        if migrated:
            migrate(url)
        yield url
        _assert_nothing_raw("the PostgreSQL database", dump_database(url))
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Storage tests run twice: on a SQLite file and on a throwaway PostgreSQL database."""
    if request.param == "postgresql":
        with _throwaway_postgresql() as url:
            yield url
        return
    yield from _sqlite_file(tmp_path_factory)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """For what a server does the same on any database (headers, access rules, its spool
    lock): one run on the embedded default, not a second server start on PostgreSQL."""
    yield from _sqlite_file(tmp_path_factory)


def _sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db')}/pixelgate.db"
    migrate(url)
    yield url
    _assert_nothing_raw("the SQLite database", dump_database(url))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own with no tables yet, for tests that migrate it themselves."""
    if request.param == "postgresql":
        with _throwaway_postgresql(migrated=False) as url:
            yield url
        return
    yield f"sqlite+aiosqlite:///{tmp_path}/empty.db"


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """For what only PostgreSQL does (LISTEN/NOTIFY, several server processes)."""
    with _throwaway_postgresql() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def logs_stay_clean() -> Iterator[None]:
    yield
    _assert_nothing_raw("the log output", "\n".join(LOGS.lines))


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_session() -> Iterator[None]:
    yield
    kill_every_server()
    shutil.rmtree(spools(), ignore_errors=True)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url)


@pytest.fixture(scope="module")
def module_client(database_url: str) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """One app per test module and database: building one costs more than most tests. Each
    test makes its own sites, so what one records is not another's to see."""
    with TestClient(create_app(settings_for(database_url))) as test_client:
        yield test_client


@pytest.fixture
def client(module_client: TestClient) -> TestClient:  # type: ignore[type-arg]
    module_client.cookies.clear()
    return module_client


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    """A private copy of the real policies, for tests that edit one."""
    target = tmp_path / "policies"
    (target / "notices").mkdir(parents=True)
    source = Path(__file__).resolve().parent.parent / "policies"
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return target
