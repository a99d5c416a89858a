"""Who may call what: every keyed operation runs its check (app/http/guards.py), and the
checks answer in the API's order: the body, then the site, then the key."""

import gc
import re
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.testing import TestClient

from app.base.settings import Settings
from app.http import deps
from app.http.openapi import KEY, KEY_OR_TOKEN, OPERATIONS
from app.main import create_app
from tests.factories import auth, make_key, make_site

Client = TestClient[Any]
# Dependencies that hand a handler what only an authorised caller may have.
# Each checks the key (or token) first: `audience` and `dsar_request` ask for site_row.
CHECKED = ("site_row", "dsar_request", "audience")


def _handlers(app: Litestar) -> dict[tuple[str, str], HTTPRouteHandler]:
    found = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            for path in handler.paths:
                for method in handler.http_methods:
                    found[(method.lower(), re.sub(r":\w+}", "}", path))] = handler
    return found


def _checks(handler: HTTPRouteHandler) -> set[str]:
    """The checked dependencies the handler asks for (and so runs)."""
    given = handler.resolve_dependencies()
    asked = handler.parsed_fn_signature.parameters
    return {
        name
        for name in CHECKED
        if name in asked and name in given and given[name].dependency is not deps.provide_site
    }


def test_every_operation_behind_a_key_or_token_asks_for_a_checked_dependency(
    settings: Settings,
) -> None:
    handlers = _handlers(create_app(settings))
    keyed = [key for key, (security, _) in OPERATIONS.items() if security in (KEY, KEY_OR_TOKEN)]
    assert keyed
    for key in keyed:
        assert _checks(handlers[key]), key


def test_an_unknown_site_is_a_404_before_the_key_is_looked_at(client: Client) -> None:
    for path in ("/v1/sites/nosuchsite", "/v1/sites/nosuchsite/dsar"):
        assert client.get(path).status_code == 404


def test_a_key_of_another_site_or_a_narrower_scope_is_a_403(
    client: Client, settings: Settings
) -> None:
    site, other = make_site(settings), make_site(settings)
    reader = auth(make_key(settings, site, scope="read"))
    assert client.get(f"/v1/sites/{site}").status_code == 401
    assert client.get(f"/v1/sites/{site}", headers=reader).status_code == 403
    assert client.get(f"/v1/sites/{other}/debug", headers=reader).status_code == 403
    assert client.get(f"/v1/sites/{site}/debug", headers=reader).status_code == 200


def test_a_refused_request_gives_its_database_connection_back_at_once(settings: Settings) -> None:
    """A check that refuses runs after the session opened: the connection it used must be back
    in the pool when the answer arrives, not whenever the garbage collector gets to it."""
    app = create_app(settings)
    pool = app.state["ctx"].engine.pool
    site = make_site(settings)
    reader = auth(make_key(settings, site, scope="read"))
    refused = [
        ("/v1/sites/nosuchsite", {}, 404),
        (f"/v1/sites/{site}", {}, 401),
        (f"/v1/sites/{site}", {"Authorization": "Bearer pg_not-a-key"}, 401),
        (f"/v1/sites/{site}", reader, 403),
        (f"/v1/sites/{site}/consent/someone", {}, 401),
        (f"/v1/sites/{site}/dsar/not-a-request-id", reader, 404),
    ]
    gc.disable()  # what is asserted is the app's own release, not the collector's
    try:
        with TestClient(app) as client:
            for path, headers, status in refused:
                assert client.get(path, headers=headers).status_code == status, path
                assert pool.checkedout() == 0, path
    finally:
        gc.enable()
