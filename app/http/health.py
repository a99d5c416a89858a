"""Liveness and readiness."""

from typing import Any

from litestar import get
from litestar.di import NamedDependency
from sqlalchemy import text

from app.http.context import Context
from app.http.problems import Problem


@get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="The database answers and the writer makes progress")
async def readyz(ctx: NamedDependency[Context]) -> dict[str, Any]:
    try:
        async with ctx.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise Problem(503, f"database unreachable: {type(exc).__name__}") from None
    problem = ctx.ingest.problem()
    if problem is not None:
        raise Problem(503, problem)
    return {"status": "ready"}
