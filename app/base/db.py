"""Declarative base, engine and sessions. Every table's key begins with the site."""

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, DateTime, MetaData, String, any_, bindparam, event, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored and returned as aware UTC, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(url: str, sqlite_cache_mib: int | None = None) -> AsyncEngine:
    """`sqlite_cache_mib`: SQLite's page cache per connection, instead of its 2 MiB default."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers go on while the writer writes; the busy timeout rides out locks.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            if sqlite_cache_mib is not None:
                cursor.execute(f"PRAGMA cache_size=-{sqlite_cache_mib * 1024}")  # in KiB
            cursor.close()

        return engine
    return create_async_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: committed on success, rolled back on any error."""
    async with sessions() as session, session.begin():
        yield session


def dialect_insert(session: AsyncSession) -> Callable[..., Any]:
    """INSERT with ON CONFLICT for the session's database (PostgreSQL and SQLite share it)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def driver_connection(session: AsyncSession) -> Any:
    """The session's asyncpg connection, for the hot path's bulk statements, where
    SQLAlchemy's per-value processing costs more than the database's own work."""
    connection = await (await session.connection()).get_raw_connection()
    driver = connection.driver_connection
    assert driver is not None  # a connection checked out of the pool is open
    return driver


def utcnow() -> datetime:
    return datetime.now(UTC)


PARTITION = re.compile(r"^events_(default|\d{4}_\d{2})$")


def managed_by_alembic(name: str | None, type_: str, parent_names: Any) -> bool:
    """Monthly partitions of `events` are made by the retention job, not by migrations."""
    return not (type_ == "table" and name is not None and PARTITION.match(name))


# alembic is imported where it is used: it weighs on the start-up of every process that
# imports this module (the server's workers, its writer process, the CLI), and only
# migrating needs it.
def alembic_config(database_url: str) -> "AlembicConfig":
    from alembic.config import Config as AlembicConfig

    import migrations

    config = AlembicConfig()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url)
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(slug)s")
    return config


def migrate(database_url: str) -> None:
    """`alembic upgrade head`; synchronous, so call it before the event loop starts."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Pseudonymised still means personal data: only the server's user may read it
            # (SQLite gives its -wal and -shm files the database file's mode).
            Path(path).touch(mode=0o600, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def day_of(session: AsyncSession, column: Any) -> ColumnElement[Any]:
    """The UTC day of a timestamp column, in SQL: read it back through `as_date`."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def is_one_of(session: AsyncSession, column: Any, values: list[str]) -> ColumnElement[bool]:
    """`column IN values`: on PostgreSQL as `= ANY(array)`, one parameter however many values
    (a prepared IN list of thousands is planned slowly, and its generic plan can be a scan).
    SQLite binds at most 32,766 values: give it a few thousand at a time."""
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam(None, values, type_=postgresql.ARRAY(String))
        return cast(ColumnElement[bool], column == any_(array))
    return cast(ColumnElement[bool], column.in_(values))


def as_date(value: Any) -> date:
    """A day read back from the database: SQLite's date() gives text."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))
