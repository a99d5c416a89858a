"""Build TC strings bit by bit, so each test states the exact wire content it sends."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class Bits:
    """Tiny bit writer so each test states the exact wire content it decodes."""

    def __init__(self) -> None:
        self.bits = ""

    def uint(self, value: int, width: int) -> "Bits":
        assert 0 <= value < 1 << width
        self.bits += format(value, f"0{width}b") if width else ""
        return self

    def ids(self, ids: Iterable[int], width: int) -> "Bits":
        chosen = set(ids)
        self.bits += "".join("1" if n in chosen else "0" for n in range(1, width + 1))
        return self

    def letters(self, text: str) -> "Bits":
        for char in text:
            self.uint(ord(char) - ord("A"), 6)
        return self

    def bitfield(self, ids: Iterable[int], max_id: int) -> "Bits":
        return self.uint(max_id, 16).uint(0, 1).ids(ids, max_id)

    def ranges(self, spans: list[tuple[int, int]], max_id: int) -> "Bits":
        self.uint(max_id, 16).uint(1, 1)
        return self.entries(spans)

    def entries(self, spans: list[tuple[int, int]]) -> "Bits":
        self.uint(len(spans), 12)
        for start, end in spans:
            self.uint(int(start != end), 1).uint(start, 16)
            if start != end:
                self.uint(end, 16)
        return self

    def encode(self) -> str:
        padded = self.bits + "0" * (-len(self.bits) % 6)
        return "".join(_ALPHABET[int(padded[i : i + 6], 2)] for i in range(0, len(padded), 6))


def core(
    *,
    version: int = 2,
    created: int = 17_489_088_000,
    last_updated: int = 17_489_088_000,
    policy: int = 5,
    service_specific: int = 1,
    purposes: Iterable[int] = (),
    purposes_li: Iterable[int] = (),
    vendor_consents: Bits | None = None,
    vendor_li: Bits | None = None,
    restrictions: Bits | None = None,
) -> Bits:
    bits = Bits().uint(version, 6).uint(created, 36).uint(last_updated, 36)
    bits.uint(300, 12).uint(7, 12).uint(3, 6).letters("FR").uint(150, 12).uint(policy, 6)
    bits.uint(service_specific, 1).uint(0, 1).ids([1, 2], 12).ids(purposes, 24).ids(purposes_li, 24)
    bits.uint(0, 1).letters("FR")
    for section in (vendor_consents, vendor_li):
        bits.bits += (section or Bits().bitfield([], 0)).bits
    bits.bits += (restrictions or Bits().uint(0, 12)).bits
    return bits


def disclosed(section: Bits) -> str:
    return segment(1, section)


def segment(segment_type: int, body: Bits) -> str:
    bits = Bits().uint(segment_type, 3)
    bits.bits += body.bits
    return bits.encode()


def publisher(purposes: Iterable[int]) -> str:
    """A Publisher TC segment giving the publisher's consent for `purposes`, nothing else."""
    return segment(3, Bits().ids(purposes, 24).ids([], 24).uint(0, 6))


# TC strings built by the IAB Tech Lab's reference encoder (tests/tcf/make_fixtures.mjs), with
# what each one encodes; the vendor they speak of is 755.
FIXTURES: list[dict[str, Any]] = msgspec.json.decode(
    (Path(__file__).parent / "tcf" / "fixtures.json").read_bytes()
)["strings"]
REFERENCE = {fixture["name"]: fixture["tc_string"] for fixture in FIXTURES}
