"""IAB TCF v2 (2.2/2.3) TC string decoder.

Written from the IAB Tech Lab spec "Consent string and vendor list formats v2"
(Final v.2.2 and its 2.3 revision). 2.3 makes the DisclosedVendors segment mandatory,
but strings created before the transition stay valid without it, so its absence is
reported as None rather than rejected.

A string that fails to decode raises TCFError carrying the fields read before the failure
(`TCFError.read`), so that the debug endpoint can show what was sent.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Decoding per character instead of through `base64` keeps the exact bit count: a
# segment is a packed bit stream, and stdlib base64 would silently drop the low
# bits of a trailing partial byte, and would skip unknown characters.
_SEXTETS = {char: format(index, "06b") for index, char in enumerate(_ALPHABET)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DISCLOSED_VENDORS, _ALLOWED_VENDORS, _PUBLISHER_TC = 1, 2, 3
_MIN_POLICY_VERSION = 4  # TCF 2.2 made strings with policy version < 4 invalid
# PubRestrictions' RestrictionType values (3 is undefined).
NOT_ALLOWED, REQUIRE_CONSENT, REQUIRE_LI = 0, 1, 2
RESTRICTION_NAMES = {NOT_ALLOWED: "not_allowed", REQUIRE_CONSENT: "require_consent"}
RESTRICTION_NAMES[REQUIRE_LI] = "require_li"


class TCFError(ValueError):
    """The TC string is malformed or not acceptable under TCF 2.2+ rules; `read` holds the
    fields decoded before the failure (all of them when a TCF 2.2 rule refused it)."""

    def __init__(self, message: str, read: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.read: dict[str, Any] = read or {}


class Restriction(msgspec.Struct, frozen=True, gc=False):
    """One PubRestrictions entry: `restriction_type` for `purpose` over the vendor ranges."""

    purpose: int
    restriction_type: int
    vendors: tuple[tuple[int, int], ...]

    def covers(self, vendor: int) -> bool:
        return any(start <= vendor <= end for start, end in self.vendors)


class PublisherTC(msgspec.Struct, frozen=True, gc=False):
    """The Publisher TC segment: the publisher's own purposes, for its own processing."""

    purposes_consent: frozenset[int]
    purposes_li: frozenset[int]
    custom_consent: frozenset[int]
    custom_li: frozenset[int]


class TCString(msgspec.Struct, frozen=True, gc=False):
    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_optins: frozenset[int]
    purposes_consent: frozenset[int]
    purposes_li: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: frozenset[int]
    vendor_li: frozenset[int]
    restrictions: tuple[Restriction, ...]
    disclosed_vendors: frozenset[int] | None
    publisher: PublisherTC | None

    def restriction(self, purpose: int, vendor: int) -> int | None:
        """The restriction type on `purpose` for `vendor`, the strictest if several
        (not allowed, then require consent, then require LI), None if unrestricted."""
        found = [
            r.restriction_type
            for r in self.restrictions
            if r.purpose == purpose and r.covers(vendor)
        ]
        return min(found, default=None)


class _BitReader:
    def __init__(self, segment: str) -> None:
        if not segment:
            raise TCFError("empty TC string segment")
        try:
            self._bits = "".join(_SEXTETS[char] for char in segment)
        except KeyError as exc:
            raise TCFError(f"invalid base64url character {exc.args[0]!r} in TC string") from None
        self._pos = 0

    def bits(self, width: int, field: str) -> str:
        end = self._pos + width
        if end > len(self._bits):
            raise TCFError(f"TC string truncated: {field} needs {width} bits at bit {self._pos}")
        chunk, self._pos = self._bits[self._pos : end], end
        return chunk

    def uint(self, width: int, field: str) -> int:
        return int(self.bits(width, field) or "0", 2)

    def flag(self, field: str) -> bool:
        return self.bits(1, field) == "1"

    def ids(self, width: int, field: str) -> frozenset[int]:
        """Bit n-1 from the left set means id n (purposes, vendors, special features)."""
        return frozenset(i for i, bit in enumerate(self.bits(width, field), 1) if bit == "1")

    def letters(self, field: str) -> str:
        codes = (self.uint(6, field), self.uint(6, field))
        if max(codes) > 25:
            raise TCFError(f"{field} is not two letters A-Z")
        return "".join(chr(ord("A") + code) for code in codes)

    def deciseconds(self, field: str) -> datetime:
        return _EPOCH + timedelta(milliseconds=100 * self.uint(36, field))

    def ranges(self, field: str) -> list[tuple[int, int]]:
        spans = []
        for _ in range(self.uint(12, f"{field} NumEntries")):
            is_range = self.flag(f"{field} IsARange")
            start = self.uint(16, f"{field} StartOrOnlyVendorId")
            end = self.uint(16, f"{field} EndVendorId") if is_range else start
            if not 1 <= start <= end:
                raise TCFError(f"{field} has an invalid vendor range {start}-{end}")
            spans.append((start, end))
        return spans

    def vendors(self, field: str) -> frozenset[int]:
        max_vendor_id = self.uint(16, f"{field} MaxVendorId")
        if not self.flag(f"{field} IsRangeEncoding"):
            return self.ids(max_vendor_id, f"{field} BitField")
        # Ranges come from untrusted input and may overlap; expanding each one naively
        # costs up to 4095 x 65535 inserts, so merge them first and expand each id once.
        found: set[int] = set()
        covered = 0
        for start, end in sorted(self.ranges(field)):
            found.update(range(max(start, covered + 1), end + 1))
            covered = max(covered, end)
        return frozenset(found)


def _restrictions(r: _BitReader) -> tuple[Restriction, ...]:
    found = []
    for _ in range(r.uint(12, "NumPubRestrictions")):
        purpose = r.uint(6, "PubRestriction PurposeId")
        restriction_type = r.uint(2, "PubRestriction RestrictionType")
        if restriction_type not in RESTRICTION_NAMES:
            raise TCFError(f"PubRestriction for purpose {purpose} has undefined type 3")
        found.append(Restriction(purpose, restriction_type, tuple(r.ranges("PubRestriction"))))
    return tuple(found)


def _publisher(r: _BitReader) -> PublisherTC:
    consent = r.ids(24, "PubPurposesConsent")
    li = r.ids(24, "PubPurposesLITransparency")
    custom = r.uint(6, "NumCustomPurposes")
    return PublisherTC(
        consent, li, r.ids(custom, "CustomPurposesConsent"), r.ids(custom, "CustomPurposesLI")
    )


# The core segment in wire order: (TCString field, how to read it).
_CORE: tuple[tuple[str, Callable[[_BitReader], Any]], ...] = (
    ("created", lambda r: r.deciseconds("Created")),
    ("last_updated", lambda r: r.deciseconds("LastUpdated")),
    ("cmp_id", lambda r: r.uint(12, "CmpId")),
    ("cmp_version", lambda r: r.uint(12, "CmpVersion")),
    ("consent_screen", lambda r: r.uint(6, "ConsentScreen")),
    ("consent_language", lambda r: r.letters("ConsentLanguage")),
    ("vendor_list_version", lambda r: r.uint(12, "VendorListVersion")),
    ("policy_version", lambda r: r.uint(6, "TcfPolicyVersion")),
    ("is_service_specific", lambda r: r.flag("IsServiceSpecific")),
    ("use_non_standard_texts", lambda r: r.flag("UseNonStandardTexts")),
    ("special_feature_optins", lambda r: r.ids(12, "SpecialFeatureOptIns")),
    ("purposes_consent", lambda r: r.ids(24, "PurposesConsent")),
    ("purposes_li", lambda r: r.ids(24, "PurposesLITransparency")),
    ("purpose_one_treatment", lambda r: r.flag("PurposeOneTreatment")),
    ("publisher_cc", lambda r: r.letters("PublisherCC")),
    ("vendor_consents", lambda r: r.vendors("VendorConsents")),
    ("vendor_li", lambda r: r.vendors("VendorLegitimateInterests")),
    ("restrictions", _restrictions),
)


def decode_fields(tc_string: str) -> TCString:
    """Decode the bit layout only, without the TCF 2.2 policy checks done by `decode`."""
    read: dict[str, Any] = {}
    try:
        return _decode_fields(tc_string, read)
    except TCFError as exc:
        raise TCFError(str(exc), read) from None


def _decode_fields(tc_string: str, read: dict[str, Any]) -> TCString:
    if not tc_string:
        raise TCFError("empty TC string")
    core, *segments = tc_string.split(".")
    r = _BitReader(core)
    read["version"] = r.uint(6, "Version")
    if read["version"] != 2:  # the rest of the layout differs between versions
        raise TCFError(f"unsupported TC string version {read['version']}, expected 2")
    for name, read_field in _CORE:
        read[name] = read_field(r)
    read["disclosed_vendors"] = read["publisher"] = None
    for segment in segments:
        s = _BitReader(segment)
        segment_type = s.uint(3, "SegmentType")
        if segment_type == _DISCLOSED_VENDORS:
            if read["disclosed_vendors"] is not None:
                raise TCFError("TC string has more than one DisclosedVendors segment")
            read["disclosed_vendors"] = s.vendors("DisclosedVendors")
        elif segment_type == _PUBLISHER_TC:
            if read["publisher"] is not None:
                raise TCFError("TC string has more than one Publisher TC segment")
            read["publisher"] = _publisher(s)
        elif segment_type != _ALLOWED_VENDORS:
            # 2 (AllowedVendors) was dropped in 2.2 but is harmless in older strings.
            raise TCFError(f"unknown TC string segment type {segment_type}")
    return TCString(**read)


def decode(tc_string: str) -> TCString:
    """Decode and validate (TCF 2.2+ rules above); raise TCFError otherwise."""
    tc = decode_fields(tc_string)
    read = msgspec.structs.asdict(tc)
    if tc.policy_version < _MIN_POLICY_VERSION:
        raise TCFError(f"TcfPolicyVersion {tc.policy_version} is below 4 (pre-TCF 2.2)", read)
    if not tc.is_service_specific:
        raise TCFError("IsServiceSpecific is 0; TCF 2.2 forbids globally-scoped strings", read)
    return tc
