"""Property: whatever identifiers come in (subject ids, e-mail addresses, IP addresses, user
agents) and whatever else a request carries, no raw identifier, nor its unkeyed SHA-256 or MD5,
reaches a table, a log line, a spool file, a DSAR export or a response (SPEC §1, §4.1)."""

import base64
import hashlib
import ipaddress
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from app.base.metrics import Metrics
from app.base.settings import Settings
from app.hits.arrival import Arrival
from app.main import create_app
from tests.app.hits.test_ingest import NOWHERE, ingest_for, known_sites
from tests.app.http.test_dsar import run_job
from tests.conftest import LOGS
from tests.factories import (
    CHROME,
    IPHONE,
    auth,
    dump_database,
    make_key,
    make_site,
    raw,
    run,
    spool_directory,
)
from tests.factories import settings_for as base_settings

Client = TestClient[Any]
PROPERTY = settings(
    max_examples=12,
    phases=[Phase.explicit, Phase.generate],  # an example takes most of a second: no shrinking
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROXY = "127.0.0.1"


class Identifiers(msgspec.Struct, frozen=True):
    subject: str
    email: str
    ipv4: str
    ipv6: str
    user_agent: str

    def raw_values(self) -> list[str]:
        # The normalised e-mail (what is pseudonymised) is as personal as the one given.
        return [*msgspec.structs.astuple(self), self.email.strip().lower()]


def forbidden(values: list[str]) -> set[str]:
    """As tests.factories.forbidden_strings(), for one example's values only."""
    found = set(values)
    for value in values:
        found.add(hashlib.sha256(value.encode()).hexdigest())
        found.add(hashlib.md5(value.encode()).hexdigest())  # noqa: S324
    return found


def readable(response: httpx.Response) -> str:
    """A response as text, with the payloads of the tokens it hands out decoded (a receipt
    is a JWS, a subject token base64 text and a MAC): base64 would hide an identifier."""
    text = f"{response.headers.multi_items()} {response.text}"
    if "json" not in response.headers.get("content-type", ""):
        return text
    body = response.json()
    tokens = (
        [body.get(k, "") for k in ("receipt", "subject_token")] if isinstance(body, dict) else []
    )
    for token in tokens:
        for part in token.split(".")[:2]:
            text += " " + base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode(
                errors="replace"
            )
    return text


def distinctive(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A random anchor in front of generated text: a value short or common enough to occur
    anywhere by chance ("a", "1") would make the search meaningless."""
    return text.map(lambda t: f"id{secrets.token_hex(4)}{t}")


ANY_TEXT = st.characters(blacklist_categories=("Cs", "Cc"))
ASCII = st.characters(min_codepoint=32, max_codepoint=126)
# Not "/": an id in a URL path is taken apart at its slashes, escaped or not (as by routers).
ID_TEXT = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/")
SUBJECTS = distinctive(
    st.text(ID_TEXT | st.sampled_from(" %+&=#?é"), min_size=12, max_size=40).map(str.strip)
)
EMAILS = st.emails().map(lambda e: f"m{secrets.token_hex(4)}.{e}")


def _ipv4_ok(address: ipaddress.IPv4Address) -> bool:
    # Its /24 is stored by design: an address ending in .0 would equal its own prefix, and
    # a one-digit first octet could be part of other text.
    octets = str(address).split(".")
    return octets[-1] != "0" and int(octets[0]) >= 11


def _ipv6_ok(address: ipaddress.IPv6Address) -> bool:
    # Its /48 is stored by design: the rest must not be zero, nor the text short.
    return (
        address.ipv4_mapped is None
        and int(address) & (1 << 80) - 1 != 0
        and len(str(address)) >= 15
    )


IPV4 = st.ip_addresses(v=4).filter(_ipv4_ok).map(str)
IPV6 = st.ip_addresses(v=6).filter(_ipv6_ok).map(str)
USER_AGENTS = st.builds(
    lambda template, junk: template.replace(") ", f"; {junk}) ", 1),
    st.sampled_from([CHROME, IPHONE]),
    distinctive(st.text(ASCII.filter(lambda c: c not in "()"), min_size=12, max_size=40)),
)
IDENTIFIERS = st.builds(Identifiers, SUBJECTS, EMAILS, IPV4, IPV6, USER_AGENTS)
# Everything else a hit carries is stored (scrubbed) by design: random, but never an identifier.
JUNK = st.text(ANY_TEXT, min_size=1, max_size=30)
EXTRA_QUERY = st.dictionaries(
    st.text(st.sampled_from("abcdefghxyz_"), min_size=1, max_size=6), JUNK
)
FIELDS = st.fixed_dictionaries(
    {
        "p": JUNK.map(lambda t: f"/{t}"),
        "c": JUNK,
        "r": JUNK.map(lambda t: f"https://ref.example/{t}"),
        **{f"utm_{f}": JUNK for f in ("source", "medium", "campaign", "content", "term")},
    }
)


def peer_is_a_proxy(app: Litestar) -> Any:
    """The app, seen from a trusted proxy: X-Forwarded-For then names the client, so the IP
    addresses drawn here reach the code that truncates them."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": (PROXY, 50000)}
        await app(scope, receive, send)

    return asgi


@pytest.fixture
def app_settings(database_url: str) -> Settings:
    return base_settings(database_url, trusted_proxies=(f"{PROXY}/32",))


@pytest.fixture
def app(app_settings: Settings) -> Iterator[tuple[Client, Litestar]]:
    litestar = create_app(app_settings)
    with TestClient(peer_is_a_proxy(litestar)) as client:
        # Starting the app applies litestar's logging config, which replaces the root
        # logger's handlers and level: without this, LOGS would see nothing from here on.
        root, level, handlers = logging.getLogger(), logging.getLogger().level, None
        if LOGS not in root.handlers:
            handlers = [LOGS]
            root.addHandler(LOGS)
        root.setLevel(logging.DEBUG)
        try:
            yield client, litestar
        finally:
            root.setLevel(level)
            for handler in handlers or []:
                root.removeHandler(handler)


def send_everything(
    client: Client, app: Litestar, settings: Settings, ids: Identifiers, fields: dict[str, str],
    extra: dict[str, str],
) -> list[httpx.Response]:  # fmt: skip
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")  # records without a consent
    admin = auth(make_key(settings, site))
    ingest = auth(make_key(settings, site, scope="ingest"))
    browser = {"User-Agent": ids.user_agent, "Referer": quote(fields["r"], safe=":/")}
    purposes = {"analytics": True, "marketing": True, "email": True}
    sent = [
        client.post(
            f"/v1/sites/{site}/consent",
            # The site's server passes on the person's own address and agent: reduced too.
            json={
                "subject": ids.subject,
                "purposes": purposes,
                "proof": {"ip": ids.ipv4, "user_agent": ids.user_agent},
            },
            headers={**admin, **browser, "X-Forwarded-For": ids.ipv4},
        ),
        client.post(
            f"/v1/sites/{site}/consent",
            json={"subject": ids.email, "purposes": purposes, "proof": {"ip": ids.ipv6}},
            headers={**admin, **browser, "X-Forwarded-For": ids.ipv6},
        ),
        client.get(
            f"/p/{site}/pixel.gif",
            params={**extra, **fields, "u": ids.subject},
            headers={**browser, "X-Forwarded-For": f"{ids.ipv6}, {ids.ipv4}"},
        ),
        client.post(
            f"/p/{site}/collect",
            json={**fields, "u": ids.email, "k": "click"},
            headers={**browser, "X-Forwarded-For": ids.ipv4},
        ),
        client.post(
            f"/v1/sites/{site}/events",
            json={
                "events": [
                    {"kind": "conversion", "email": ids.email, "page": fields["p"], "value": 5},
                    {"kind": "pageview", "subject": ids.subject, "campaign": fields["c"]},
                ]
            },
            headers={**ingest, "User-Agent": ids.user_agent},
        ),
    ]
    assert [r.status_code for r in sent] == [201, 201, 200, 204, 200]
    assert sent[-1].json()["accepted"] == 2
    client.blocking_portal.call(app.state.ctx.ingest.settled)
    person = f"/v1/sites/{site}/consent/{quote(ids.subject, safe='')}"
    sent += [client.get(person, headers=admin), client.get(f"{person}/history", headers=admin)]
    assert [r.status_code for r in sent[-2:]] == [200, 200]
    access = client.post(
        f"/v1/sites/{site}/dsar",
        json={"type": "access", "subject": ids.subject, "regulation": "ccpa"},
        headers={**admin, **browser, "X-Forwarded-For": ids.ipv6},
    )
    assert access.status_code == 202
    assert run_job(settings).access >= 1
    export = client.get(f"/v1/sites/{site}/dsar/{access.json()['id']}/export", headers=admin)
    assert export.status_code == 200 and export.json()["events"]
    return [*sent, access, export]


def spool_bytes(
    database_url: str, settings: Settings, ids: Identifiers, fields: dict[str, str]
) -> bytes:
    """A batch of the same hits written while the database is down: the spool's bytes."""
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    spool = spool_directory()
    query = urlencode({**fields, "u": ids.subject})
    headers = (("user-agent", ids.user_agent), ("referer", fields["r"]))
    hits = [
        Arrival(site, query, headers, time.time()),
        Arrival(site, "", headers, time.time(), {"subject": ids.email}),
    ]

    async def while_down() -> Metrics:
        metrics = Metrics()
        sites = await known_sites(database_url, site)
        writer, engine = ingest_for(NOWHERE, spool, metrics, sites)
        await writer.start()
        for hit in hits:
            await writer.submit(hit)
        await writer.close()
        await engine.dispose()
        return metrics

    metrics = run(while_down())
    assert metrics.spilled._value.get() == 2
    return b"".join(path.read_bytes() for path in sorted(spool.glob("*.spool")))


@pytest.mark.slow
@PROPERTY
@given(ids=IDENTIFIERS, fields=FIELDS, extra=EXTRA_QUERY)
def test_no_raw_identifier_reaches_storage_logs_spool_exports_or_responses(
    app: tuple[Client, Litestar],
    app_settings: Settings,
    database_url: str,
    ids: Identifiers,
    fields: dict[str, str],
    extra: dict[str, str],
) -> None:
    values = [raw(value) for value in ids.raw_values()]  # the session's own scan sees them too
    client, litestar = app
    logged_before = len(LOGS.lines)  # earlier lines were searched by earlier examples
    responses = send_everything(client, litestar, app_settings, ids, fields, extra)
    spooled = spool_bytes(database_url, app_settings, ids, fields)
    secret = forbidden(values)
    places = {
        "the database": dump_database(database_url),
        "the log": "\n".join(LOGS.lines[logged_before:]),
        **{
            f"response {n} ({r.request.method} {r.request.url.path[:30]}…)": readable(r)
            for n, r in enumerate(responses)
        },
    }
    for where, text in places.items():
        assert not [s for s in secret if s in text], f"raw identifier in {where}"
    assert not [s for s in secret if s.encode() in spooled], "raw identifier in the spool"
