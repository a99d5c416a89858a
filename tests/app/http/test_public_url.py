"""URLs come from PIXELGATE_PUBLIC_URL, never the Host header; X-Forwarded-For only from a
trusted proxy (SPEC §2)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from litestar.testing import TestClient

from app.base.settings import Settings
from app.main import create_app
from tests.factories import auth, make_key, make_site, raw, settings_for, subject_id, table_rows
from tests.servers import Server

Client = TestClient[Any]
PUBLIC = "https://px.example.test"
FORGED = {"Host": "evil.example"}


@pytest.fixture
def public_settings(database_url: str) -> Settings:
    return settings_for(database_url, public_url=PUBLIC)


@pytest.fixture
def public_client(public_settings: Settings) -> Iterator[Client]:
    with TestClient(create_app(public_settings)) as test_client:
        yield test_client


def test_a_forged_host_reaches_no_receipt_link_or_pixel_url(
    public_client: Client, public_settings: Settings
) -> None:
    site = make_site(public_settings)
    admin = auth(make_key(public_settings, site))
    given = public_client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject_id(), "purposes": {"analytics": True}},
        headers={**admin, **FORGED},
    )
    assert given.status_code == 201
    claims = jwt.decode(given.json()["receipt"], options={"verify_signature": False})
    assert claims["policyUrl"] == f"{PUBLIC}/v1/sites/{site}/policy"
    assert "evil" not in str(claims)  # nor in the controller, which names no URL of ours
    link = public_client.post(
        f"/v1/sites/{site}/links",
        json={"destination": "https://shop.example/"},
        headers={**admin, **FORGED},
    ).json()
    assert link["url"] == f"{PUBLIC}/l/{link['code']}"
    urls = public_client.post(
        f"/v1/sites/{site}/pixel-urls",
        json={"subjects": [subject_id()], "kind": "open"},
        headers={**admin, **FORGED},
    ).json()["urls"]
    assert all(u.startswith(f"{PUBLIC}/p/{site}/pixel.gif?t=") for u in urls.values())


def test_without_a_public_url_the_listen_address_is_the_base(database_url: str) -> None:
    settings = settings_for(database_url, host="pixelgate.internal", port=8123)
    site = make_site(settings)
    with TestClient(create_app(settings)) as client:
        link = client.post(
            f"/v1/sites/{site}/links",
            json={"destination": "https://shop.example/"},
            headers={**auth(make_key(settings, site)), **FORGED},
        ).json()
    assert link["url"] == f"http://pixelgate.internal:8123/l/{link['code']}"


# X-Forwarded-For as sent -> the /24 kept as the consent's proof, without and with
# PIXELGATE_TRUSTED_PROXIES naming the loopback peer the tests connect from.
FORWARDED = {
    "": {
        "198.51.100.23": "127.0.0.0",
        "192.0.2.9, 198.51.100.23": "127.0.0.0",
    },
    "127.0.0.1/32": {
        "198.51.100.23": "198.51.100.0",
        "192.0.2.9, 198.51.100.23": "198.51.100.0",  # the client may have written the left
        "not-an-ip": "127.0.0.0",
    },
}


@pytest.mark.parametrize("trusted", ["", "127.0.0.1/32"], ids=["untrusted", "trusted"])
def test_x_forwarded_for_is_read_only_from_a_trusted_proxy(
    sqlite_url: str, tmp_path: Path, trusted: str
) -> None:
    settings = settings_for(sqlite_url)
    site = make_site(settings)
    # Stopped at once: without jobs, none is cancelled in its first run (whose cancelled
    # pool reset SQLAlchemy logs with a traceback).
    server = Server(
        sqlite_url, tmp_path, PIXELGATE_TRUSTED_PROXIES=trusted, PIXELGATE_JOBS="off"
    ).start()
    expected = {}
    try:
        for forwarded, prefix in FORWARDED[trusted].items():
            expected[prefix] = expected.get(prefix, 0) + 1
            # Keyless, as a browser posts: with a key the caller's address is not kept at all.
            given = httpx.post(
                f"{server.url}/v1/sites/{site}/consent",
                json={"purposes": {"analytics": True}},
                headers={"X-Forwarded-For": forwarded},
            )
            assert given.status_code == 201
            raw(given.json()["subject"])
    finally:
        server.stop()
    server.assert_clean_log()
    prefixes = [row["ip_prefix"] for row in table_rows(settings, "consent_ledger", site=site)]
    assert {p: prefixes.count(p) for p in prefixes} == expected
