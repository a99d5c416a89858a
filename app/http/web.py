"""What a browser is sent: the interactive API docs, from assets shipped in the package, and
the headers every page carries.

The docs are Swagger UI (app/http/static/swagger-ui/, an unmodified copy of the swagger-ui-dist
package, Apache-2.0, its LICENSE and NOTICE beside it), started by app/http/static/docs.js: the
page holds no inline script and loads nothing from another origin, so its
Content-Security-Policy can forbid both.
"""

import html
from pathlib import Path
from typing import Any, cast

from litestar import Request, Response
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router
from litestar.types import Message, Scope

from app.http.problems import problem

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER_UI_VERSION = "5.35.0"  # app/http/static/swagger-ui/package.json
# Swagger UI draws its icons from data: URIs; everything else comes from this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
NOSNIFF = (b"x-content-type-options", b"nosniff")
PAGE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"referrer-policy", b"no-referrer"),
]

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{static}/swagger-ui/swagger-ui.css">
<link rel="stylesheet" href="{static}/docs.css">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec}"></div>
<script src="{static}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{static}/docs.js"></script>
</body>
</html>
"""


def no_such_file(_: Request[Any, Any, Any], __: ValueError) -> Response[Any]:
    return problem(404, "no such file")


class SwaggerDocs(OpenAPIRenderPlugin):
    """Swagger UI at /schema, its assets under /schema/static."""

    def __init__(self) -> None:
        super().__init__(path="/", favicon="", style="")
        self._static = "/schema/static"

    def receive_router(self, router: Router) -> None:
        self._static = f"{router.path.rstrip('/')}/static"
        router.register(
            create_static_files_router(
                path="/static",
                directories=[STATIC],
                name="docs-static",
                include_in_schema=False,
                # A path the file system refuses (a NUL in it) names no file either.
                exception_handlers={ValueError: no_such_file},
            )
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return PAGE.format(
            title=html.escape(str(openapi_schema["info"]["title"])),
            static=html.escape(self._static),
            spec=html.escape(self.get_openapi_json_route(request)),
        ).encode()


async def security_headers(message: Message, scope: Scope) -> None:
    """litestar's before_send hook: every answer it gives is marked nosniff, and every HTML page
    gets the Content-Security-Policy and Referrer-Policy. The pixel's answers are its own
    (app/http/pixel.py), identical under both fronts, and untouched."""
    if message["type"] != "http.response.start":
        return
    # raw_path: the pixel's mount has already cut "/p" off scope["path"].
    if bytes(scope.get("raw_path") or scope["path"].encode()).startswith(b"/p/"):
        return
    start = cast(dict[str, Any], message)
    headers = list(start.get("headers", ()))
    names = {bytes(name).lower() for name, _ in headers}
    if b"x-content-type-options" not in names:
        headers.append(NOSNIFF)
    is_page = any(
        bytes(name).lower() == b"content-type" and bytes(value).startswith(b"text/html")
        for name, value in headers
    )
    if is_page:
        headers += [header for header in PAGE_HEADERS if header[0] not in names]
    start["headers"] = headers
