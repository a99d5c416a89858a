"""RFC 9457 problem+json for every API error, and JSON bodies decoded into Structs."""

from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

T = TypeVar("T")
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

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)


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
    detail = exc.detail
    if isinstance(exc, ValidationException) and exc.extra:
        detail = f"{exc.detail}: {exc.extra}"
    return problem(exc.status_code, detail, headers=exc.headers)


def on_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


def decode_json(body: bytes, type_: type[T]) -> T:
    """Malformed JSON is a 400; well-formed JSON of the wrong shape is a 422."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise Problem(422, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise Problem(400, f"malformed JSON: {exc}") from None
