"""The floor for a litestar app on granian: one handler answering the pixel with nothing else.

bench/pixel.py serves it with `granian --interface asgi --loop uvloop bench.bare_app:app
--workers 1`, the same server, loop and worker count as `pixelgate serve`, to tell the
framework's own cost apart from pixelgate's. The body and Cache-Control header are the ones
app/pixel.py sends (pixel.py checks that all the servers it compares answer the same bytes).
"""

import base64

from litestar import Litestar, Response, get

# app/pixel.py's transparent 1x1 GIF (42 bytes; nginx's empty_gif is a 43-byte one)
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
CACHE_CONTROL = "no-store, no-cache, must-revalidate, max-age=0"


@get("/p/{site:str}/pixel.gif", include_in_schema=False)
async def pixel(site: str) -> Response[bytes]:
    return Response(GIF, media_type="image/gif", headers={"cache-control": CACHE_CONTROL})


app = Litestar(route_handlers=[pixel], openapi_config=None, debug=False)
