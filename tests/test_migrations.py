from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import app.models
import consent.models
from app.db import Base, alembic_config, make_engine, managed_by_alembic
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
