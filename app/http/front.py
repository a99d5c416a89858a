"""What granian serves under `pixelgate serve`: the pixel answered in granian's own interface
(RSGI), every other request handed to the litestar app as ASGI.

The pixel is the hot path, and turning each request and response into ASGI messages costs as
much as the pixel itself: here it takes the request as granian holds it and answers with one
call. The rest of the API goes through `asgi_call`, which builds the ASGI scope and messages
litestar expects, and the app's lifespan runs in granian's start-up and shutdown hooks.
"""

import asyncio
import logging
import sys
import time
from typing import Any, cast

from granian._granian import RSGIHTTPProtocol as HTTPProtocol  # granian.rsgi's, typed
from granian.rsgi import Scope as RSGIScope
from litestar import Litestar
from litestar.types import Message, Receive

from app.hits.arrival import REPEATED_HIT_HEADERS, Arrival, HitHeaders, single_hit_headers
from app.http.context import Context
from app.http.pixel import (
    GIF,
    MAX_BODY,
    PIXEL_HEADERS,
    beacon_values,
    collect_headers,
    pixel_route,
    preflight_headers,
    queue_hit,
)

log = logging.getLogger("pixelgate.front")


class Front:
    """The RSGI application: `__rsgi__` per request, `__rsgi_init__`/`__rsgi_del__` around."""

    def __init__(self, app: Litestar) -> None:
        self._app = app
        self._ctx: Context = app.state.ctx
        self._lifespan = Lifespan(app)
        self._hit_headers = single_hit_headers(self._ctx.settings.region_header)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if not loop.run_until_complete(self._lifespan.startup()):
            _flush_log_queues()
            sys.exit(1)  # as granian does when an ASGI app's start-up fails

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self._lifespan.shutdown())

    async def __rsgi__(self, scope: RSGIScope, proto: HTTPProtocol) -> None:
        path = scope.path  # read once: each read of a scope field is a call into granian
        if path.startswith("/p/"):
            await self._pixel(path, scope, proto)
        else:
            await asgi_call(self._app, scope, proto, self._lifespan.state)

    async def _pixel(self, path: str, scope: RSGIScope, proto: HTTPProtocol) -> None:
        """The same answers as app/http/pixel.py serve_pixel gives over ASGI."""
        site, action = pixel_route(path[2:])
        method = scope.method
        if method == "GET" and action == "pixel.gif":
            hit = Arrival(site, scope.query_string, self._headers(scope), time.time())
            if not self._ctx.ingest.offer(hit):  # full: wait for room
                await self._ctx.ingest.submit(hit)
            proto.response_bytes(200, PIXEL_HEADERS, GIF)
        elif method == "HEAD" and action == "pixel.gif":  # a probe: same answer, nothing recorded
            proto.response_empty(200, PIXEL_HEADERS)
        elif method == "POST" and action == "collect":
            body = b""
            async for chunk in proto:
                body += chunk
                if len(body) > MAX_BODY:
                    break
            values = beacon_values(body)
            if values is not None:
                await queue_hit(self._ctx, site, "", self._headers(scope), values)
            origin = scope.headers.get("origin")
            proto.response_empty(204, await collect_headers(self._ctx, site, origin))
        elif method == "OPTIONS" and action == "collect":
            origin = scope.headers.get("origin")
            proto.response_empty(204, await preflight_headers(self._ctx, site, origin))
        else:
            proto.response_empty(404, [])

    def _headers(self, scope: RSGIScope) -> HitHeaders:
        """Only the headers the writer reads. (granian leaves out headers whose value is not
        visible ASCII: a user agent with é in it comes as none.) Asked for by name, as text:
        cheaper on the thread the pixel answers on than taking them all to pick from, or
        encoding them to bytes as ASGI would (bench/README.md)."""
        headers = scope.headers
        picked = [
            (name, value) for name in self._hit_headers if (value := headers.get(name)) is not None
        ]
        for name in REPEATED_HIT_HEADERS:
            if name in headers:  # rare: then every one of them, where get() gives the first
                picked.extend((k, v) for k, v in headers.items() if k == name)
        return tuple(picked)


def _address(address: str) -> tuple[str, int]:
    """granian's "host:port" (an IPv6 host perhaps in brackets) as ASGI's (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port or 0)


async def asgi_call(
    app: Litestar, scope: RSGIScope, proto: HTTPProtocol, state: dict[str, Any]
) -> None:
    """One HTTP request through the ASGI app: the body streamed in as it comes, the response
    sent in one piece when the app gives it in one, streamed otherwise."""
    asgi_scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode(),  # granian gives the path decoded only
        "query_string": scope.query_string.encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in scope.headers.items()],
        "client": _address(scope.client),
        "server": _address(scope.server),
        "state": state.copy(),
    }
    chunks = aiter(proto)
    body_done = False
    finished = asyncio.Event()  # the response is sent (which receive() must tell, says ASGI)

    async def receive() -> dict[str, Any]:
        nonlocal body_done
        if body_done:
            if not finished.is_set():
                waits = [proto.client_disconnect(), finished.wait()]
                _, pending = await asyncio.wait(
                    map(asyncio.ensure_future, waits), return_when=asyncio.FIRST_COMPLETED
                )
                for wait in pending:
                    wait.cancel()
            return {"type": "http.disconnect"}
        try:
            return {"type": "http.request", "body": await anext(chunks), "more_body": True}
        except StopAsyncIteration:
            body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}

    status, headers = 500, list[tuple[str, str]]()
    stream: Any = None

    async def send(message: Message) -> None:
        nonlocal status, headers, stream
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
        elif message["type"] == "http.response.body" and not finished.is_set():
            body, more = message.get("body", b""), message.get("more_body", False)
            if stream is None and not more:
                proto.response_bytes(status, headers, body)
            else:
                if stream is None:
                    stream = proto.response_stream(status, headers)
                if body:
                    await stream.send_bytes(body)
            if not more:
                finished.set()

    await app(asgi_scope, cast(Receive, receive), send)  # type: ignore[arg-type]
    if stream is None and not finished.is_set():
        proto.response_empty(status, headers)  # the app ended without a body


def _flush_log_queues() -> None:
    """litestar logs through a queue written by a thread; a forked granian worker ends with
    os._exit, which would skip writing out what is queued (the reason its start-up failed)."""
    for name in ("", "litestar"):
        for handler in logging.getLogger(name).handlers:
            listener = getattr(handler, "listener", None)
            if listener is not None:
                listener.stop()


class Lifespan:
    """The ASGI lifespan protocol, driven from granian's RSGI hooks."""

    def __init__(self, app: Litestar) -> None:
        self._app = app
        self.state: dict[str, Any] = {}
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._replies: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> bool:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.create_task(
            self._app(scope, self._events.get, self._replies.put)  # type: ignore[arg-type]
        )
        return await self._step("lifespan.startup")

    async def shutdown(self) -> bool:
        return await self._step("lifespan.shutdown")

    async def _step(self, event: str) -> bool:
        assert self._task is not None
        await self._events.put({"type": event})  # type: ignore[typeddict-item]
        reply = asyncio.ensure_future(self._replies.get())
        await asyncio.wait((reply, self._task), return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():  # the app ended (or raised) without a word
            reply.cancel()
            log.error("%s failed: the app stopped", event)
            return False
        if reply.result()["type"].endswith(".failed"):
            log.error("%s failed: %s", event, reply.result().get("message", ""))
            return False
        return True
