"""Writing recorded events."""

from collections.abc import Sequence

import msgspec
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Event
from app.pipeline import EventRow


async def write_events(session: AsyncSession, rows: Sequence[EventRow]) -> None:
    """One multi-row insert for the whole batch."""
    if rows:
        await session.execute(insert(Event), [msgspec.structs.asdict(row) for row in rows])
