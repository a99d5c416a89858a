"""A litestar app behind app/http/front.py's ASGI bridge, for responses pixelgate's own routes do
not give (yet): a streamed body, and none at all. Served by tests/app/test_serve.py."""

from collections.abc import Iterator

from granian.rsgi import Scope
from litestar import Litestar, asgi, get
from litestar.response import Stream
from litestar.types import Receive, Send
from litestar.types import Scope as ASGIScope

from app.http.front import HTTPProtocol, asgi_call


def _parts() -> Iterator[bytes]:
    yield from (b"one,", b"two,", b"three")


@get("/stream")
async def streamed() -> Stream:
    return Stream(_parts(), headers={"x-parts": "3"})


@asgi("/no-body")
async def no_body(scope: ASGIScope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", b'"1"')]})


LITESTAR = Litestar([streamed, no_body])


async def app(scope: Scope, proto: HTTPProtocol) -> None:
    await asgi_call(LITESTAR, scope, proto, {})
