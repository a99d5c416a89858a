import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import app.models
import consent.models
from app.db import Base, alembic_config, make_engine, managed_by_alembic
from consent.store import REGISTRIES_SQL
from tests.factories import run

_ = (app.models, consent.models)


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
    from app.db import migrate

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
