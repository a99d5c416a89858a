"""RFC 9457 problem+json for every API error."""

import logging
from typing import Any

from litestar import Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

log = logging.getLogger("pixelgate.api")
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
        # Well-formed JSON of the wrong shape is a 422; malformed JSON stays a 400.
        if any(isinstance(e, dict) and e.get("source") == "body" for e in exc.extra):
            status = 422
        reasons = "; ".join(
            f"{e.get('key')}: {e.get('message')}" if isinstance(e, dict) else str(e)
            for e in exc.extra
        )
        detail = reasons if status == 422 else f"{detail}: {reasons}"
    if status == HTTP_500_INTERNAL_SERVER_ERROR:
        detail = "internal error"  # what went wrong inside is for the log, not the caller
    return problem(status, detail, headers=exc.headers)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The route's template and the error's type only: values could be raw identifiers.
    route = request.scope.get("path_template", "?")
    log.error("unhandled %s on %s", type(exc).__name__, route)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal error")
