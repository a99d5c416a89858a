import re
from pathlib import Path

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

import app.base.tables
import consent.tables
from app.base.db import Base, alembic_config, make_engine, managed_by_alembic, migrate
from consent.store import REGISTRIES_SQL
from tests.factories import run

_ = (app.base.tables, consent.tables)


def test_migrations_have_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert len(script.get_heads()) == 1


def test_models_match_the_migrated_schema(database_url: str) -> None:
    def diff(connection: Connection) -> list[object]:
        options = {"compare_type": True, "include_name": managed_by_alembic}
        context = MigrationContext.configure(connection, opts=options)
        return list(compare_metadata(context, Base.metadata))

    async def check() -> list[object]:
        engine = make_engine(database_url)
        async with engine.connect() as connection:
            found = await connection.run_sync(diff)
        await engine.dispose()
        return found

    assert run(check()) == []


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    from app.base.db import migrate

    migrate(database_url)
    migrate(database_url)


def _lookup_plan(url: str) -> str:
    """How PostgreSQL runs the writer's registry lookup, table scans ruled out (on a table
    this small it would rather read it all)."""

    async def explain() -> str:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            async with connection.transaction():
                await connection.execute("SET LOCAL enable_seqscan = off")
                await connection.execute("SET LOCAL enable_bitmapscan = off")
                rows = await connection.fetch(f"EXPLAIN {REGISTRIES_SQL}", "shop", ["a", "b"])
        finally:
            await connection.close()
        return "\n".join(row[0] for row in rows)

    return run(explain())


def test_on_postgresql_a_consent_lookup_reads_the_key_alone_and_0005_reverts(
    postgresql_url: str,
) -> None:
    assert "Index Only Scan using pk_consent_state" in _lookup_plan(postgresql_url)
    config = alembic_config(postgresql_url)
    command.downgrade(config, "0004")
    try:
        plan = _lookup_plan(postgresql_url)
        assert "Index Scan using pk_consent_state" in plan and "Only" not in plan
    finally:
        command.upgrade(config, "head")
    assert "Index Only Scan using pk_consent_state" in _lookup_plan(postgresql_url)


SUBJECT_EVENTS = "SELECT id FROM events WHERE site = 'shop' AND subject = 'a'"


def _subject_index(url: str) -> str:
    """The index that finds one subject's events (access and erasure requests): its
    definition on PostgreSQL (each monthly partition has its own), the plan on SQLite."""

    async def explain() -> str:
        engine = make_engine(url)
        try:
            async with engine.begin() as connection:
                if engine.dialect.name == "sqlite":
                    plan = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {SUBJECT_EVENTS}")
                    return "\n".join(row[-1] for row in plan)
                await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
                plan = await connection.exec_driver_sql(f"EXPLAIN {SUBJECT_EVENTS}")
                used = re.findall(r"Index Scan using (\S+)", "\n".join(row[0] for row in plan))
                found = await connection.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = ANY(:used)"),
                    {"used": used},
                )
                return "\n".join(row[0] for row in found)
        finally:
            await engine.dispose()

    return run(explain())


def test_a_subject_s_events_are_found_by_their_index_and_0006_reverts(database_url: str) -> None:
    hashed = ("USING hash (subject)", "USING INDEX ix_events_subject (subject=?)")
    before = ("USING btree (site, subject)", "ix_events_site_subject (site=? AND subject=?)")
    postgres = database_url.startswith("postgresql")
    assert hashed[not postgres] in _subject_index(database_url)
    config = alembic_config(database_url)
    command.downgrade(config, "0005")
    try:
        assert before[not postgres] in _subject_index(database_url)
    finally:
        command.upgrade(config, "head")
    assert hashed[not postgres] in _subject_index(database_url)


def _tables(url: str) -> set[str]:
    async def names() -> set[str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return run(names())


def test_0007_adds_the_event_ids_table_and_reverts(database_url: str) -> None:
    assert "event_ids" in _tables(database_url)
    config = alembic_config(database_url)
    command.downgrade(config, "0006")
    try:
        assert "event_ids" not in _tables(database_url)
    finally:
        command.upgrade(config, "head")
    assert "event_ids" in _tables(database_url)


def test_0008_adds_the_consent_changes_table_and_reverts(database_url: str) -> None:
    assert "consent_changes" in _tables(database_url)
    config = alembic_config(database_url)
    command.downgrade(config, "0007")
    try:
        assert "consent_changes" not in _tables(database_url)
        assert "event_ids" in _tables(database_url)
    finally:
        command.upgrade(config, "head")
    assert "consent_changes" in _tables(database_url)


def test_a_new_sqlite_database_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "data" / "pixelgate.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    assert path.stat().st_mode & 0o777 == 0o600


def test_0009_gives_sites_a_controller_identity_and_reverts(database_url: str) -> None:
    config = alembic_config(database_url)
    command.downgrade(config, "0008")
    try:
        assert "controller" not in _columns(database_url, "sites")
    finally:
        command.upgrade(config, "head")
    assert {"controller", "contact_email", "address", "phone", "homepage"} <= _columns(
        database_url, "sites"
    )


def _columns(url: str, table: str) -> set[str]:
    async def names() -> set[str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as connection:
                columns = await connection.run_sync(lambda c: inspect(c).get_columns(table))
                return {column["name"] for column in columns}
        finally:
            await engine.dispose()

    return run(names())
