"""The floor for a litestar app on granian: one handler answering the pixel with nothing else.

bench/pixel_throughput.py serves it with `granian --interface asgi --loop uvloop
bench.references.bare:app --workers 1`, the same server, loop and worker count as
`pixelgate serve`, to tell the framework's own cost apart from pixelgate's. It sends
app/http/pixel.py's own GIF and Cache-Control header (the bench checks that all the servers it
compares answer the same bytes).
"""

from litestar import Litestar, Response, get

from app.http.pixel import CACHE_CONTROL, GIF


@get("/p/{site:str}/pixel.gif", include_in_schema=False)
async def pixel(site: str) -> Response[bytes]:
    return Response(GIF, media_type="image/gif", headers={"cache-control": CACHE_CONTROL})


app = Litestar(route_handlers=[pixel], openapi_config=None, debug=False)
