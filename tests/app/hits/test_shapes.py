"""The hit pipeline's own steps, where they take shortcuts: reading the query, minting ids,
reading a hit's shape once for all the hits that share it."""

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import msgspec
import pytest

from app.base.keys import KeyRing
from app.base.sites import SiteOut
from app.hits.arrival import Arrival, HitHeaders, hit_headers, hit_values, parse_query, read_hit
from app.hits.event import Pending
from app.hits.shapes import Shapes
from app.hits.signed_pixels import PixelClaim, sign_pixel
from app.hits.steps import Dropped, new_event_id, prepare_at_site
from consent.policy import load_policies
from tests.factories import CHROME, GMAIL_PROXY, GOOGLEBOT, IPHONE, POLICIES, SECRET

QUERIES = [
    "p=/pricing&u=visitor-42",
    "u=a&u=b&k=open",  # the last of a repeated parameter wins
    "u=&p=/a&&k",  # blanks and parameters without a value are left out
    "p=/a=b&c=spring&utm_source=news&unknown=1",  # '=' inside a value
    "u=alice%40example.test&p=%2Fa+b",  # escaped: parse_qsl itself
    "gdpr=1&gdpr_consent=CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA&t=tok.sig",
    "",
]


@pytest.mark.parametrize("query", QUERIES)
def test_the_query_is_read_as_parse_qsl_reads_it(query: str) -> None:
    assert parse_query(query) == hit_values(parse_qsl(query))


def test_a_hit_keeps_only_the_headers_it_reads_as_text() -> None:
    raw = [
        (b"host", b"pixel.test"),
        (b"cookie", b"session=secret"),
        (b"user-agent", b"Mozilla/5.0 \xe9"),  # latin-1, as ASGI gives it
        (b"sec-gpc", b"0"),
        (b"sec-gpc", b"1"),
        (b"cf-ipcountry", b"DE"),
        (b"referer", b"https://x.test/y"),
    ]
    kept = (("user-agent", "Mozilla/5.0 é"), ("sec-gpc", "0"), ("sec-gpc", "1"))
    assert hit_headers(raw, None) == (*kept, ("referer", "https://x.test/y"))
    assert hit_headers(raw, "CF-IPCountry") == (
        *kept,
        ("cf-ipcountry", "DE"),
        ("referer", "https://x.test/y"),
    )


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    # the same objects uuid.UUID makes: equal, hashed, printed and spooled alike
    same = [uuid.UUID(str(i)) for i in ids]
    assert same == ids and set(same) == set(ids)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ids), type=list[uuid.UUID]) == ids


KEYS = KeyRing(SECRET)
SITE = SiteOut("news", "gdpr-strict", [], "eu", datetime(2026, 1, 1, tzinfo=UTC))
POLICY = load_policies(POLICIES)["gdpr-strict"]  # "open" pixels must be signed
TOKEN = sign_pixel(KEYS, PixelClaim("news", KEYS.pseudonym("news", "bob"), "open", "c1", "/m"))
UA: HitHeaders = (("user-agent", CHROME),)
HITS = [
    ("p=/a&u=alice", UA),
    ("p=/a&u=bob", UA),  # the same shape, another subject
    ("p=/a", UA),  # no subject
    ("p=/a&u=alice", (("user-agent", IPHONE), ("referer", "https://x.test/y"))),
    ("p=/a&u=alice", (*UA, ("sec-gpc", "1"), ("dnt", "1"))),
    ("k=open&p=newsletter-7&c=spring&u=alice", (("user-agent", GMAIL_PROXY),)),
    ("k=purchase&v=19.90&cur=EUR&u=alice&utm_source=mail", UA),
    ("p=/a&u=alice", (("user-agent", GOOGLEBOT),)),  # bot
    ("p=/a&u=" + "x" * 257, (("user-agent", GOOGLEBOT),)),  # invalid before bot
    ("p=/a&u=%20%20", UA),  # a blank subject
    ("k=Bad-Kind&u=alice", UA),
    ("k=open&u=alice", UA),  # unsigned
    ("k=open&u=" + "x" * 300, UA),  # invalid before unsigned
    (f"t={TOKEN}&u=someone-else", UA),  # the token's subject, not u
    ("t=forged.token&u=alice", UA),
    ("v=abc&u=alice", UA),
    ("u=alice&u=bob&u=&k=purchase", UA),  # the last u not blank is the subject
    ("u&p=/a&&u=", UA),  # a u without a value, and a blank one: no subject
    ("p=/shu=1&cur=EUR&u=carol", UA),  # "u=" inside another value
    ("p=%2Fa+b&u=alice%40example.test", UA),  # escaped: read whole
    ("p=/a&%75=dave", UA),  # an escaped name: read whole
    ("p=%2Fl%3Futm_source%3Dig%26x%3D1&utm_medium=mail&u=alice", UA),  # utm in the page
    ("p=%2Fl%3Futm_source%3Dig&utm_source=news&u=erin", UA),  # the hit's own wins
]


def direct(query: str, headers: HitHeaders, now: datetime) -> Pending | str:
    hit = read_hit("news", parse_query(query), headers, None)
    try:
        return prepare_at_site(KEYS, SITE, POLICY, hit, now)
    except Dropped as exc:
        return exc.reason


def shaped(
    shapes: Shapes, query: str, headers: HitHeaders, now: datetime, beacon: bool = False
) -> Pending | str:
    """Through `shapes`, as the writer reads a pixel's query or a beacon's values."""
    values = hit_values(parse_qsl(query)) if beacon else None
    arrival = Arrival("news", "" if beacon else query, headers, now.timestamp(), values)
    try:
        return shapes.prepare(KEYS, SITE, POLICY, arrival, None, now)
    except Dropped as exc:
        return exc.reason


def same_but_id(one: Pending | str, other: Pending | str) -> bool:
    if isinstance(one, str) or isinstance(other, str):
        return one == other
    return msgspec.structs.replace(one.event, id=other.event.id) == other.event and (
        one.policy,
        one.signals,
        one.seen,
    ) == (other.policy, other.signals, other.seen)


@pytest.mark.parametrize("beacon", [False, True])
@pytest.mark.parametrize("kept", [4096, 4])  # 4: shapes are also read again, once evicted
def test_a_hit_read_through_its_shape_is_the_hit_read_whole(kept: int, beacon: bool) -> None:
    shapes = Shapes(max_entries=kept)
    start = datetime(2026, 11, 30, 12, tzinfo=UTC)
    for round_ in range(3):  # first read, then from the shapes kept
        for n, (query, headers) in enumerate(HITS):
            now = start + timedelta(seconds=round_ * 100 + n)
            expected = direct(query, headers, now)
            got = shaped(shapes, query, headers, now, beacon)
            assert same_but_id(got, expected), (query, got, expected)
    # the hits above cover every way a pixel hit is dropped before its consent is decided
    outcomes = [direct(query, headers, start) for query, headers in HITS]
    assert {o for o in outcomes if isinstance(o, str)} == {"bot", "invalid", "unsigned"}
    signed = outcomes[13]
    assert isinstance(signed, Pending) and signed.event.subject == KEYS.pseudonym("news", "bob")


def test_hits_of_one_shape_share_nothing_they_could_change() -> None:
    shapes = Shapes()
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    one = shaped(shapes, "p=/a&u=alice", UA, now)
    other = shaped(shapes, "p=/a&u=bob", UA, now + timedelta(seconds=1))
    assert isinstance(one, Pending) and isinstance(other, Pending)
    assert one.event.subject == KEYS.pseudonym("news", "alice")
    assert other.event.subject == KEYS.pseudonym("news", "bob")
    assert one.event.id != other.event.id and one.event.occurred_at != other.event.occurred_at
    assert one.event.basis is not other.event.basis


@pytest.mark.parametrize(
    "query",
    [
        "p=/a&utm_source=%00",
        "p=/a&c=spring%00",
        "p=/a&utm_term=%2500",  # a NUL only once scrubbing decodes the escape
        "p=/a&utm_medium=a%0Db",
        "p=/a&cur=EUR%0A&v=3",  # the pattern's $ lets a trailing newline through
        "k=pageview%0A",
        "p=/a&utm_campaign=" + "a@b.c+" * 21,  # 126 characters, 147 once masked
        "p=/a&v=99999999999999.99999",  # 10^14 once rounded to the column's scale
        "p=/a&v=1e14",
        "p=/a&v=NaN",
    ],
)
def test_a_hit_with_a_value_the_events_table_cannot_hold_is_invalid(query: str) -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert direct(query, UA, now) == "invalid"
    assert shaped(Shapes(), query, UA, now) == "invalid"
    assert shaped(Shapes(), query, UA, now, beacon=True) == "invalid"


def test_a_beacon_with_a_lone_surrogate_is_invalid() -> None:
    """JSON may escape one (a query string cannot): no database stores it as UTF-8."""
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    arrival = Arrival("news", "", UA, now.timestamp(), {"page": "/a", "utm_source": "x\ud800"})
    with pytest.raises(Dropped, match="invalid"):
        Shapes().prepare(KEYS, SITE, POLICY, arrival, None, now)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("12.5", "12.5"),
        ("-99999999999999.9999", "-99999999999999.9999"),
        ("0.123456", "0.1235"),  # rounded to the column's scale, as the database would
        ("1e-100000", "0.0000"),  # no driver meets a hundred thousand decimals
    ],
)
def test_a_value_is_kept_as_the_column_stores_it(given: str, stored: str) -> None:
    got = direct(f"p=/a&v={given}&cur=EUR", UA, datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert isinstance(got, Pending) and str(got.event.value) == stored


def test_a_tab_is_text_any_column_can_take() -> None:
    got = direct("p=/a&utm_source=a%09b", UA, datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert isinstance(got, Pending) and got.event.utm_source == "a\tb"


def test_utm_values_of_the_page_fill_only_the_fields_the_hit_left_empty() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    query = "p=%2Fl%3Futm_source%3Dig%26utm_term%3Dx%26q%3D1&utm_source=news&utm_medium=mail"
    for got in (direct(query, UA, now), shaped(Shapes(), query, UA, now, beacon=True)):
        assert isinstance(got, Pending)
        event = got.event
        assert (event.page, event.utm_source, event.utm_medium, event.utm_term) == (
            "/l?utm_source=ig&utm_term=x",
            "news",
            "mail",
            "x",
        )
