"""Alembic environment: async engine, SQLite and PostgreSQL alike."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import app.base.tables
import consent.tables  # noqa: F401  (registers the consent tables on Base.metadata)
from app.base.db import Base, make_engine, managed_by_alembic

target_metadata = Base.metadata
_ = app.base.tables


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=managed_by_alembic,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = make_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `pixelgate migrate`")
asyncio.run(_run_async(context.config.get_main_option("sqlalchemy.url") or ""))
