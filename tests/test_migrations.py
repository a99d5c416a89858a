import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

import app.base.tables
import consent.tables
from app.base.db import (
    Base,
    alembic_config,
    make_engine,
    make_sessionmaker,
    managed_by_alembic,
    migrate,
    transaction,
)
from app.base.tables import Event
from consent.store import REGISTRIES_SQL
from tests.factories import dump_database, event_row, run

_ = (app.base.tables, consent.tables)


# What the schema is, read from the database's own catalogue: every table (alembic's bookkeeping
# aside) with its columns in order, constraints and indexes as the database would recreate them.
SQLITE_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table'"
    " AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'"
)
POSTGRESQL_SCHEMA = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0
          AND NOT a.attisdropped AND c.relname != 'alembic_version'
        ORDER BY c.relname, a.attnum""",
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname != 'alembic_version'
        ORDER BY c.relname, k.conname""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename != 'alembic_version'
        ORDER BY tablename, indexname""",
    "partitions": """
        SELECT c.relname, p.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        ORDER BY c.relname""",
    "partition keys": """
        SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_partitioned_table t
        JOIN pg_class c ON c.oid = t.partrelid
        ORDER BY c.relname""",
}


def _sqlite_schema(connection: Connection) -> dict[str, list[tuple[object, ...]]]:
    def rows(sql: str) -> list[tuple[object, ...]]:
        return [tuple(row) for row in connection.exec_driver_sql(sql)]

    schema: dict[str, list[tuple[object, ...]]] = {}
    for (table,) in rows(SQLITE_TABLES):
        indexes = []
        for _, name, unique, origin, partial in rows(f"PRAGMA index_list('{table}')"):
            columns = [row[2] for row in rows(f"PRAGMA index_info('{name}')")]
            indexes.append((name, unique, origin, partial, columns))
        schema[f"{table} columns"] = [row[1:] for row in rows(f"PRAGMA table_xinfo('{table}')")]
        schema[f"{table} foreign keys"] = [
            row[2:] for row in rows(f"PRAGMA foreign_key_list('{table}')")
        ]
        schema[f"{table} indexes"] = sorted(indexes, key=repr)
        schema[f"{table} checks"] = sorted(
            repr(check) for check in inspect(connection).get_check_constraints(table)
        )
    return schema


def schema_of(url: str) -> dict[str, list[tuple[object, ...]]]:
    """The schema as comparable data; {} for a database with no tables."""

    async def read() -> dict[str, list[tuple[object, ...]]]:
        engine = make_engine(url)
        try:
            async with engine.connect() as connection:
                if engine.dialect.name == "sqlite":
                    return await connection.run_sync(_sqlite_schema)
                schema = {}
                for part, sql in POSTGRESQL_SCHEMA.items():
                    found = [tuple(row) for row in await connection.exec_driver_sql(sql)]
                    if found:
                        schema[part] = found
                return schema
        finally:
            await engine.dispose()

    return run(read())


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
    """The database the other tests have filled: a second run finds it at head and leaves the
    schema and every row as they were."""
    migrate(database_url)
    schema, rows = schema_of(database_url), dump_database(database_url)
    migrate(database_url)
    assert schema_of(database_url) == schema
    assert dump_database(database_url) == rows
    assert "alembic_version: ('0" in rows  # the dump reads every table, alembic's too


def test_every_migration_reverts_and_applies_again_step_by_step(empty_database_url: str) -> None:
    """Up from nothing one revision at a time, down to nothing, and up again: at each revision
    the schema is the one the first way up made (the newest months' partitions included)."""
    config = alembic_config(empty_database_url)
    revisions = [
        script.revision
        for script in reversed(list(ScriptDirectory.from_config(config).walk_revisions()))
    ]
    seen = {"base": schema_of(empty_database_url)}
    assert seen["base"] == {}
    for revision in revisions:
        command.upgrade(config, revision)
        seen[revision] = schema_of(empty_database_url)
    for revision in reversed(["base", *revisions[:-1]]):
        command.downgrade(config, "-1")
        assert schema_of(empty_database_url) == seen[revision], f"down to {revision}"
    for revision in revisions:
        command.upgrade(config, "+1")
        assert schema_of(empty_database_url) == seen[revision], f"up to {revision}"


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


def test_0013_marks_every_day_with_events_for_the_reports_job_and_reverts(
    database_url: str,
) -> None:
    """Until the job builds a day's report cells, reports count it from raw events."""
    config = alembic_config(database_url)
    command.downgrade(config, "0012")
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=2), today - timedelta(days=5)]
    try:
        assert "report_cells" not in _tables(database_url)

        async def seed() -> None:
            engine = make_engine(database_url)
            async with transaction(make_sessionmaker(engine)) as session:
                for day in days:  # late in the UTC day: a day of another zone would differ
                    at = datetime.combine(day, time(23, 30), tzinfo=UTC)
                    row = event_row("mig-0013", "pageview", at)
                    session.add(Event(**msgspec.structs.asdict(row)))
            await engine.dispose()

        run(seed())
    finally:
        command.upgrade(config, "head")
    marked = run(_rows(database_url, "SELECT site, day FROM report_dirty WHERE site = 'mig-0013'"))
    assert sorted((site, str(day)) for site, day in marked) == sorted(
        ("mig-0013", day.isoformat()) for day in days
    )


def test_0014_marks_the_days_built_before_it_for_building_again_and_reverts(
    database_url: str,
) -> None:
    """Cells of every kind together (kind "*") exist only for days built since."""
    config = alembic_config(database_url)
    command.downgrade(config, "0013")
    built, dirty = date(2026, 11, 2), date(2026, 11, 3)
    try:
        run(
            _execute(
                database_url,
                "INSERT INTO report_cells (site, grain, period, n, dimension, kind, hits, "
                f"anonymous_hits, members) VALUES ('mig-0014', 'd', '{built}', 1, '', "
                "'pageview', 1, 1, '')",
                f"INSERT INTO report_dirty (site, day, mark) VALUES ('mig-0014', '{dirty}', 7)",
            )
        )
    finally:
        command.upgrade(config, "head")
    marked = run(_rows(database_url, "SELECT day, mark FROM report_dirty WHERE site = 'mig-0014'"))
    assert sorted((str(day), mark) for day, mark in marked) == [
        (built.isoformat(), 0),
        (dirty.isoformat(), 7),
    ]
    run(_execute(database_url, "UPDATE report_cells SET kind = '*' WHERE site = 'mig-0014'"))
    command.downgrade(config, "0013")
    try:
        assert run(_rows(database_url, "SELECT * FROM report_cells WHERE site = 'mig-0014'")) == []
    finally:
        command.upgrade(config, "head")


async def _execute(url: str, *statements: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _rows(url: str, query: str) -> list[Any]:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            return list(await connection.execute(text(query)))
    finally:
        await engine.dispose()
