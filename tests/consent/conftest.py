"""What the consent tests share: sessions on each test database."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.base.db import make_engine, make_sessionmaker


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Any]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()
