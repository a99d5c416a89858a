"""Storage tests run on a real SQLite file and on a real, throwaway PostgreSQL database."""

import asyncio
import logging
import logging.config
import os
import secrets
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
from tests.factories import dump_database, forbidden_strings, settings_for

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
def _throwaway_postgresql() -> Iterator[str]:
    name = f"pixelgate_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_HOST} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_HOST}: {exc}")
    url = f"postgresql+asyncpg://{PG_HOST}/{name}"
    try:
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
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db')}/pixelgate.db"
    migrate(url)
    yield url
    _assert_nothing_raw("the SQLite database", dump_database(url))


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """For what only PostgreSQL does (LISTEN/NOTIFY, several server processes)."""
    with _throwaway_postgresql() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def logs_stay_clean() -> Iterator[None]:
    yield
    _assert_nothing_raw("the log output", "\n".join(LOGS.lines))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(create_app(settings)) as test_client:
        yield test_client


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
