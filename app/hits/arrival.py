"""A hit as it arrives (an Arrival, kept raw in memory until the writer reads it) and as
the writer reads it (a Hit). Both hold raw values: never stored, logged or returned."""

from collections.abc import Iterable
from urllib.parse import parse_qsl

import msgspec

from app.base.event_fields import UTM_FIELDS, Attribution

MAX_QUERY = 8192
# The pixel's query parameters and the Hit fields they fill.
QUERY_FIELDS = {
    "k": "kind",
    "u": "subject",
    "p": "page",
    "c": "campaign",
    "r": "referrer",
    "v": "value",
    "cur": "currency",
    "t": "token",
    "gdpr": "gdpr",
    "gdpr_consent": "gdpr_consent",
    **{f: f for f in UTM_FIELDS},
}
# Set by a tracked link's redirect only (app/http/links.py): no query or beacon field maps to
# it, so no pixel can say it came through a link.
FROM_LINK = "from_link"
# (name in lower case, value) of each header read_hit() reads: text, as granian gives headers
# (app/http/front.py), where ASGI's bytes would be encoded only to be decoded again in the writer.
HitHeaders = tuple[tuple[str, str], ...]


class Arrival(msgspec.Struct, gc=False, array_like=True):
    """A pixel request as it came in, kept only in memory until the writer reads it.

    The pixel answers after queueing this and nothing more: reading, pseudonymising and
    deciding happen in the writer, a batch at a time. Holds raw values, like a Hit.

    Batches of these cross the pipe to the writer process as msgpack arrays, without field
    names: fewer bytes, and half the writer's decoding time (bench/README.md)."""

    site: str
    query: str  # the raw query string, or "" when `values` are given
    headers: HitHeaders
    at: float  # time.time() when it arrived
    values: dict[str, str] | None = None  # hit_values() of a beacon or link, instead of query


class Hit(Attribution, kw_only=True, gc=False):
    """A request as read by the writer. Holds raw values: never stored, logged or returned.

    Hot-path structs are `gc=False`: they hold no cycles, and thousands are made a second
    (Pending ones may also wait in a spool frame) for the garbage collector to walk."""

    site: str
    kind: str = "pageview"
    subject: str | None = None
    page: str | None = None
    referrer: str | None = None
    value: str | None = None
    currency: str | None = None
    gdpr: str | None = None
    gdpr_consent: str | None = None
    token: str | None = None
    user_agent: str = ""
    gpc: bool = False
    dnt: bool = False
    region: str | None = None
    from_link: bool = False  # a click on the site's own tracked link, seen by the server


def hit_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The pixel's parameters among `pairs`, by the Hit field they fill; blanks left out."""
    return {QUERY_FIELDS[k]: v for k, v in pairs if k in QUERY_FIELDS and v != ""}


def parse_query(query: str) -> dict[str, str]:
    """hit_values() of a raw query string. Most pixel queries have nothing escaped: those are
    split here, several times faster than parse_qsl, with the same result."""
    text = query[:MAX_QUERY]
    if "%" in text or "+" in text:
        return hit_values(parse_qsl(text))
    values = {}
    for pair in text.split("&"):
        key, _, value = pair.partition("=")
        if value and key in QUERY_FIELDS:
            values[QUERY_FIELDS[key]] = value
    return values


# The headers read_hit() reads, besides the configured region header, and the only ones a hit
# keeps. Sec-GPC may come more than once.
HIT_HEADERS = ("user-agent", "referer", "dnt")
REPEATED_HIT_HEADERS = ("sec-gpc",)


def single_hit_headers(region_header: str | None) -> tuple[str, ...]:
    """The names of the headers a hit keeps one of: HIT_HEADERS and the region header."""
    return (*HIT_HEADERS, region_header.lower()) if region_header else HIT_HEADERS


def hit_headers(raw: Iterable[tuple[bytes, bytes]], region_header: str | None) -> HitHeaders:
    """The headers a hit keeps, out of an ASGI request's (names already in lower case)."""
    names = (*single_hit_headers(region_header), *REPEATED_HIT_HEADERS)
    return tuple(
        (name, value.decode("latin-1"))
        for key, value in raw
        if (name := key.decode("latin-1")) in names
    )


def read_hit(
    site: str,
    values: dict[str, str],
    headers: HitHeaders,
    region_header: str | None,
) -> Hit:
    """`values`: a fresh dict from hit_values() or parse_query() (the Referer header may be
    added to it); the request's headers give the rest."""
    user_agent, gpc, dnt, region = "", False, False, None
    region_name = region_header.lower() if region_header else None
    for name, value in headers:
        if name == "user-agent":
            user_agent = value
        elif name == "referer":
            values.setdefault("referrer", value)
        elif name == "sec-gpc":
            # Only exactly "1" counts, in any one of several headers (or a comma-joined one).
            gpc = gpc or any(part.strip() == "1" for part in value.split(","))
        elif name == "dnt":
            dnt = value.strip() == "1"
        elif name == region_name:
            region = value
    from_link = values.pop(FROM_LINK, None) is not None
    return Hit(
        site=site,
        **values,
        user_agent=user_agent,
        gpc=gpc,
        dnt=dnt,
        region=region,
        from_link=from_link,
    )


Said = str | tuple[tuple[str, str], ...]  # what a hit says besides its subject: see said_by()


def said_by(arrival: Arrival) -> tuple[str | None, Said]:
    """An arrival's subject, and the rest of what it says, not read yet: the rest of its
    query, or its values as pairs. Most queries are split without being read; one with
    escapes is read whole (its `u` may be escaped)."""
    if arrival.values is not None:
        values = dict(arrival.values)
        return values.pop("subject", None), tuple(values.items())
    text = arrival.query[:MAX_QUERY]
    if "%" in text or "+" in text:
        values = parse_query(text)
        return values.pop("subject", None), tuple(values.items())
    if "u=" not in text:
        return None, text
    subject, rest = None, []
    for pair in text.split("&"):
        if pair.startswith("u="):
            subject = pair[2:] or subject  # as parse_query(): the last one not blank
        else:
            rest.append(pair)
    return subject, "&".join(rest)
