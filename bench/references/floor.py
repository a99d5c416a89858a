"""The floor for any Python app on granian: an RSGI app answering every request with the
pixel, and nothing else (no routing, no framework, nothing recorded).

bench/pixel_throughput.py serves it with `granian --interface rsgi --loop uvloop
bench.references.floor:app --workers 1`, the interface, loop and worker count `pixelgate
serve` answers its pixel in (app/http/front.py): what is left between it and nginx is the cost
of handing each request from granian's Rust to Python and back, which no code of ours can
remove.
"""

from typing import Any

from app.http.pixel import GIF, PIXEL_HEADERS


class Floor:
    def __rsgi_init__(self, loop: Any) -> None:
        pass

    def __rsgi_del__(self, loop: Any) -> None:
        pass

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        proto.response_bytes(200, PIXEL_HEADERS, GIF)


app = Floor()
