"""RFC 9457 problem+json for every API error."""

import logging
import re
from typing import Any

import asyncpg
import sqlalchemy.exc
from litestar import Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

log = logging.getLogger("pixelgate.api")
RETRY_LATER = {"Retry-After": "5"}
# litestar's words for a query parameter left out, which SPEC §4.8 answers with a 422 naming it
MISSING_QUERY = re.compile(r"Missing required query parameter '([^']+)'")
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
    500: "Internal Server Error",
}


class Problem(HTTPException):
    """An error with a status of our choosing and a detail meant for the caller."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)


class ApiRequest(Request[Any, Any, State]):
    """A request whose JSON body, however malformed, is the caller's error: msgspec gives up
    on deep nesting with a RecursionError, which litestar does not turn into a 400."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise Problem(400, "the body is not valid JSON: nested too deeply") from None


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content={
            "type": "about:blank",
            "status": status,
            "title": TITLES.get(status, "Error"),
            "detail": detail,
        },
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status, detail = exc.status_code, exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # Well-formed JSON of the wrong shape, or a missing or bad query parameter, is a 422;
        # malformed JSON stays a 400.
        if any(isinstance(e, dict) and e.get("source") in ("body", "query") for e in exc.extra):
            status = 422
        reasons = "; ".join(
            f"{e.get('key')}: {e.get('message')}" if isinstance(e, dict) else str(e)
            for e in exc.extra
        )
        detail = reasons if status == 422 else f"{detail}: {reasons}"
    elif isinstance(exc, ValidationException) and (missing := MISSING_QUERY.match(detail)):
        status, detail = 422, f"{missing.group(1)}: required"
    if status == HTTP_500_INTERNAL_SERVER_ERROR:
        detail = "internal error"  # what went wrong inside is for the log, not the caller
    return problem(status, detail, headers=exc.headers)


def database_unavailable(exc: BaseException) -> bool:
    """Whether the database could not be reached (or was too busy to answer), as opposed to a
    statement it refused: the first is an outage to wait out, the second a bug."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        (
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.InterfaceError,
            sqlalchemy.exc.TimeoutError,  # no connection free in the pool
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            OSError,
            TimeoutError,
        ),
    )


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The route's template and the error's type only: values could be raw identifiers.
    route = request.scope.get("path_template", "?")
    if database_unavailable(exc):
        log.warning("database unavailable on %s: %s", route, type(exc).__name__)
        return problem(503, "the database is unavailable; try again shortly", RETRY_LATER)
    log.error("unhandled %s on %s", type(exc).__name__, route)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal error")
