"""Pseudonyms (keyed, per site, normalised e-mail) and IP truncation (SPEC §1, §4.1)."""

import hashlib
import hmac

import pytest

from app.base.keys import KeyRing, normalise_identifier, truncate_ip
from tests.factories import SECRET, TEST_EMAIL, TEST_IP, TEST_IPV6

OTHER_SECRET = bytes(range(1, 33))
VISITOR = "visitor-4f2a9c"


def test_the_same_identifier_on_the_same_site_gives_the_same_pseudonym() -> None:
    first = KeyRing(SECRET).pseudonym("shop", VISITOR)
    assert KeyRing(SECRET).pseudonym("shop", VISITOR) == first  # a fresh key ring: a restart


def test_the_same_identifier_on_two_sites_gives_two_unlinkable_pseudonyms() -> None:
    ring = KeyRing(SECRET)
    assert ring.pseudonym("shop", VISITOR) != ring.pseudonym("blog", VISITOR)


def test_another_master_secret_gives_another_pseudonym() -> None:
    assert KeyRing(SECRET).pseudonym("shop", VISITOR) != KeyRing(OTHER_SECRET).pseudonym(
        "shop", VISITOR
    )


def test_different_identifiers_give_different_pseudonyms() -> None:
    ring = KeyRing(SECRET)
    assert ring.pseudonym("shop", "visitor-1") != ring.pseudonym("shop", "visitor-2")


@pytest.mark.parametrize(
    "spelling",
    ["Alice@Example.TEST", "ALICE@EXAMPLE.TEST", "  alice@example.test\n", "\tAlice@example.test "],
)
def test_an_email_address_is_the_same_person_whatever_its_case_and_surrounding_spaces(
    spelling: str,
) -> None:
    ring = KeyRing(SECRET)
    assert normalise_identifier(spelling) == TEST_EMAIL
    assert ring.pseudonym("shop", spelling) == ring.pseudonym("shop", TEST_EMAIL)


def test_other_identifiers_keep_their_case_but_lose_surrounding_spaces() -> None:
    ring = KeyRing(SECRET)
    assert ring.pseudonym("shop", "Visitor-1") != ring.pseudonym("shop", "visitor-1")
    assert ring.pseudonym("shop", " Visitor-1 ") == ring.pseudonym("shop", "Visitor-1")


@pytest.mark.parametrize("identifier", [VISITOR, TEST_EMAIL])
def test_a_pseudonym_is_64_hex_characters_and_not_an_unkeyed_hash(identifier: str) -> None:
    pseudonym = KeyRing(SECRET).pseudonym("shop", identifier)
    assert len(pseudonym) == 64
    assert set(pseudonym) <= set("0123456789abcdef")
    assert pseudonym != hashlib.sha256(identifier.encode()).hexdigest()
    assert identifier not in pseudonym


def test_derived_keys_differ_by_label_and_are_stable() -> None:
    ring = KeyRing(SECRET)
    assert ring.key("site", "shop", "pseudonym") == KeyRing(SECRET).key("site", "shop", "pseudonym")
    assert ring.key("site", "shop", "pseudonym") != ring.key("site", "blog", "pseudonym")
    assert len(ring.key("receipts")) == 32


TRUNCATIONS = [
    pytest.param(TEST_IP, "203.0.113.0", id="ipv4 to /24"),
    pytest.param("203.0.113.0", "203.0.113.0", id="ipv4 already truncated"),
    pytest.param(" 203.0.113.77 ", "203.0.113.0", id="ipv4 with spaces"),
    pytest.param(TEST_IPV6, "2001:db8:abcd::", id="ipv6 to /48"),
    pytest.param("2001:DB8:ABCD:FFFF::1", "2001:db8:abcd::", id="ipv6 upper case"),
    pytest.param("::ffff:203.0.113.77", "203.0.113.0", id="ipv4-mapped ipv6 to ipv4 /24"),
    pytest.param(None, None, id="none"),
    pytest.param("", None, id="empty"),
    pytest.param("not-an-ip", None, id="garbage"),
    pytest.param("203.0.113.256", None, id="octet out of range"),
    pytest.param("203.0.113.0/24", None, id="a network"),
    pytest.param("203.0.113.77:443", None, id="with port"),
]


@pytest.mark.parametrize(("raw", "truncated"), TRUNCATIONS)
def test_an_ip_address_is_truncated_to_its_network_and_anything_else_is_none(
    raw: str | None, truncated: str | None
) -> None:
    assert truncate_ip(raw) == truncated


@pytest.mark.parametrize("data", [b"", b"visitor-1", b"alice@example.test", bytes(300)])
def test_a_mac_is_the_standard_hmac_sha256_under_the_labels_key(data: bytes) -> None:
    ring = KeyRing(SECRET)
    key = ring.key("site", "shop", "pseudonym")
    expected = hmac.new(key, data, hashlib.sha256).digest()
    assert ring.mac(data, "site", "shop", "pseudonym") == expected
    assert ring.mac(data, "site", "shop", "pseudonym") == expected  # the kept states unchanged
