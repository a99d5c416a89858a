from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from consent.tcf import (
    NOT_ALLOWED,
    REQUIRE_CONSENT,
    REQUIRE_LI,
    PublisherTC,
    Restriction,
    TCFError,
    TCString,
    decode,
    decode_fields,
)
from tests.tcf_strings import FIXTURES, Bits, core, disclosed, segment

# Worked example of the current IAB spec (TCF 2.3 revision, "Updates sample TC Strings"):
# Core . DisclosedVendors . PublisherTC. Its TcfPolicyVersion is 2, so it is a format
# example that `decode` must reject; its fields are checked through `decode_fields`.
SPEC_2_3 = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA"
# The TCF 2.2 spec text (Final v.2.2, May 2023): Core . PublisherTC, with both vendor sections.
SPEC_2_2_CORE_AND_PUBLISHER = (
    "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA"
    ".argAC0gAAAAAAAAAAAA"
)
# Also from the 2.2 text: a globally-scoped string with an AllowedVendors (type 2) segment.
SPEC_2_2_FOUR_SEGMENTS = (
    "COw4XqLOw4XqLAAAAAENAXCAAAAAAAAAAAAAAAAAAAAA"
    ".IFukWSQgAIQwgI0QEByFAAAAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAEQ"
    "AAAAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA"
    ".QFukWSQgAIQwgI0QEByFAAAAeIAACAIgSAAQAIAgEQACEABAAAgAQFAEAIAAAGBAAgAAAAQAIFAAMCQAAgAAQiRAEQ"
    "AAAAANAAIAAggAIYQFAAARmggBC3ZCYzU2yIA"
    ".YAAAAAAAAAAAAAAAAAA"
)
# The TCF 2.0 spec's example, a version 1 string.
SPEC_2_0_VERSION_1 = "BObdrPUOevsguAfDqFENCNAAAAAmeAAA"


def test_spec_example_decodes_cmp_880() -> None:
    tc = decode_fields(SPEC_2_3)
    assert tc.version == 2
    assert tc.cmp_id == 880
    assert tc.consent_language == "EN"
    assert tc.vendor_list_version == 48
    assert tc.publisher_cc == "DE"
    assert tc.vendor_consents == {1, 2, 3, 4}
    assert tc.disclosed_vendors == frozenset({1, 2, 3, 4, 5, 100, 404})


def test_spec_example_dates_are_the_same_utc_day() -> None:
    tc = decode_fields(SPEC_2_3)
    assert tc.created == tc.last_updated == datetime(2025, 6, 3, tzinfo=UTC)


def test_spec_example_is_rejected_by_decode_because_its_policy_version_is_2() -> None:
    assert decode_fields(SPEC_2_3).policy_version == 2
    with pytest.raises(TCFError, match="TcfPolicyVersion 2"):
        decode(SPEC_2_3)


def test_spec_example_without_its_publisher_segment_differs_only_there() -> None:
    core_and_disclosed = decode_fields(SPEC_2_3.rsplit(".", 1)[0])
    full = decode_fields(SPEC_2_3)
    assert full.publisher == PublisherTC(frozenset(), frozenset(), frozenset(), frozenset())
    assert core_and_disclosed.publisher is None
    assert msgspec.structs.replace(full, publisher=None) == core_and_disclosed


def test_spec_example_core_alone_has_no_disclosed_vendors() -> None:
    assert decode_fields(SPEC_2_3.split(".")[0]).disclosed_vendors is None


def test_tcf_2_2_spec_example_decodes_both_vendor_sections() -> None:
    tc = decode_fields(SPEC_2_2_CORE_AND_PUBLISHER)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (21, 7, 2)
    assert (tc.consent_language, tc.publisher_cc, tc.vendor_list_version) == ("EN", "KM", 23)
    assert tc.is_service_specific
    assert tc.special_feature_optins == {2}
    assert tc.purposes_consent == {1, 3, 9, 10}
    assert tc.purposes_li == {3, 4, 5, 8, 9, 10}
    assert tc.vendor_li == {1, 9, 26, 27, 30, 36, 37, 43, 86, 97, 110, 113}
    assert len(tc.vendor_consents) == 56
    assert tc.disclosed_vendors is None
    assert tc.publisher is not None
    assert tc.publisher.purposes_consent == {2, 4, 6, 8, 9, 10}
    assert tc.publisher.purposes_li == {2, 4, 5, 7, 10}


def test_tcf_2_2_global_spec_example_decodes_but_is_not_service_specific() -> None:
    tc = decode_fields(SPEC_2_2_FOUR_SEGMENTS)
    assert not tc.is_service_specific
    assert tc.disclosed_vendors is not None
    assert len(tc.disclosed_vendors) == 115
    with pytest.raises(TCFError):
        decode(SPEC_2_2_FOUR_SEGMENTS)


def test_built_string_passes_validation_and_returns_a_tcstring() -> None:
    tc = decode(core().encode() + "." + disclosed(Bits().bitfield([2], 2)))
    assert isinstance(tc, TCString)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen, tc.vendor_list_version) == (
        300,
        7,
        3,
        150,
    )
    assert (tc.consent_language, tc.publisher_cc, tc.policy_version) == ("FR", "FR", 5)
    assert tc.special_feature_optins == {1, 2}
    assert tc.disclosed_vendors == frozenset({2})


def test_purposes_1_7_8_map_to_the_first_seventh_and_eighth_bits() -> None:
    bits = core(purposes=[1, 7, 8], purposes_li=[2, 24])
    assert bits.bits[152:176] == "100000110000000000000000"
    tc = decode(bits.encode())
    assert tc.purposes_consent == {1, 7, 8}
    assert tc.purposes_li == {2, 24}


def test_vendor_bitfield_and_range_encoding_give_the_same_vendor_set() -> None:
    vendors = {1, 2, 3, 10, 11, 12, 13, 300}
    as_bitfield = core(vendor_consents=Bits().bitfield(vendors, 300))
    as_ranges = core(vendor_consents=Bits().ranges([(1, 3), (10, 13), (300, 300)], 300))
    assert decode(as_bitfield.encode()).vendor_consents == vendors
    assert decode(as_ranges.encode()).vendor_consents == vendors


def test_overlapping_vendor_ranges_are_unioned() -> None:
    section = Bits().ranges([(5, 9), (1, 6), (7, 7), (20, 21)], 21)
    tc = decode(core(vendor_li=section).encode())
    assert tc.vendor_li == {1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21}


def test_reversed_vendor_range_is_rejected() -> None:
    section = Bits().uint(9, 16).uint(1, 1).uint(1, 12).uint(1, 1).uint(9, 16).uint(4, 16)
    with pytest.raises(TCFError, match="invalid vendor range 9-4"):
        decode(core(vendor_consents=section).encode())


def test_disclosed_vendors_segment_decodes_in_range_form() -> None:
    segment = disclosed(Bits().ranges([(1, 5), (100, 100), (404, 404)], 404))
    tc = decode(core().encode() + "." + segment)
    assert tc.disclosed_vendors == frozenset({1, 2, 3, 4, 5, 100, 404})


def test_missing_disclosed_vendors_segment_is_none_not_an_error() -> None:
    assert decode(core().encode()).disclosed_vendors is None


def test_publisher_tc_segment_before_disclosed_vendors_is_accepted() -> None:
    publisher = segment(3, Bits().ids([1], 24).ids([], 24).uint(0, 6))
    tc = decode(".".join([core().encode(), publisher, disclosed(Bits().bitfield([3], 3))]))
    assert tc.disclosed_vendors == frozenset({3})


def test_publisher_restrictions_decode_with_their_vendor_ranges() -> None:
    restrictions = Bits().uint(2, 12)
    restrictions.uint(2, 6).uint(1, 2).entries([(1, 1), (4, 8)])
    restrictions.uint(7, 6).uint(0, 2).entries([(300, 300)])
    tc = decode(core(restrictions=restrictions).encode())
    assert tc.restrictions == (
        Restriction(2, REQUIRE_CONSENT, ((1, 1), (4, 8))),
        Restriction(7, NOT_ALLOWED, ((300, 300),)),
    )
    assert [tc.restriction(2, v) for v in (1, 3, 4, 8, 9)] == [1, None, 1, 1, None]
    assert tc.restriction(7, 300) == NOT_ALLOWED and tc.restriction(2, 300) is None


def test_several_restrictions_on_one_purpose_and_vendor_give_the_strictest() -> None:
    def restricted(*types: int) -> TCString:
        restrictions = Bits().uint(len(types) + 1, 12)
        restrictions.uint(1, 6).uint(REQUIRE_LI, 2).entries([(755, 755)])  # another purpose
        for kind in types:
            restrictions.uint(8, 6).uint(kind, 2).entries([(700, 800)])
        return decode(core(restrictions=restrictions).encode())

    assert restricted(REQUIRE_LI, REQUIRE_CONSENT).restriction(8, 755) == REQUIRE_CONSENT
    assert restricted(REQUIRE_LI, NOT_ALLOWED).restriction(8, 755) == NOT_ALLOWED
    assert restricted(REQUIRE_LI).restriction(8, 755) == REQUIRE_LI


def test_a_restriction_of_the_undefined_type_3_is_rejected() -> None:
    restrictions = Bits().uint(1, 12).uint(1, 6).uint(3, 2).entries([(755, 755)])
    with pytest.raises(TCFError, match="undefined type 3"):
        decode(core(restrictions=restrictions).encode())


def test_publisher_tc_segment_decodes_purposes_and_custom_purposes() -> None:
    body = Bits().ids([1, 7, 8], 24).ids([2, 9], 24).uint(3, 6).ids([1, 3], 3).ids([2], 3)
    tc = decode(f"{core().encode()}.{segment(3, body)}")
    assert tc.publisher == PublisherTC(
        purposes_consent=frozenset({1, 7, 8}),
        purposes_li=frozenset({2, 9}),
        custom_consent=frozenset({1, 3}),
        custom_li=frozenset({2}),
    )


def test_two_publisher_tc_segments_are_rejected() -> None:
    once = segment(3, Bits().ids([1], 24).ids([], 24).uint(0, 6))
    with pytest.raises(TCFError, match="more than one Publisher TC"):
        decode(f"{core().encode()}.{once}.{once}")


def test_a_truncated_publisher_tc_segment_is_rejected() -> None:
    short = segment(3, Bits().ids([1], 24).ids([], 24).uint(5, 6).ids([1], 2))
    with pytest.raises(TCFError, match="truncated: CustomPurposesConsent"):
        decode(f"{core().encode()}.{short}")


def test_an_error_keeps_the_fields_read_before_it() -> None:
    encoded = core(purposes=[1, 8], vendor_consents=Bits().bitfield([1, 600], 600)).encode()
    with pytest.raises(TCFError) as info:
        decode(encoded[:60])
    read = info.value.read
    assert read["cmp_id"] == 300 and read["purposes_consent"] == {1, 8}
    assert "vendor_consents" not in read and "restrictions" not in read


def test_a_string_refused_by_a_tcf_2_2_rule_keeps_every_field() -> None:
    with pytest.raises(TCFError) as info:
        decode(core(purposes=[1], policy=3).encode())
    assert info.value.read["policy_version"] == 3
    assert info.value.read["purposes_consent"] == {1}
    assert info.value.read["publisher"] is None


def test_a_wrong_version_keeps_only_the_version() -> None:
    with pytest.raises(TCFError) as info:
        decode(core(version=1).encode())
    assert info.value.read == {"version": 1}


# --- strings built by the IAB Tech Lab's reference encoder (tests/tcf/make_fixtures.mjs) -----

TYPES = {"not_allowed": NOT_ALLOWED, "require_consent": REQUIRE_CONSENT, "require_li": REQUIRE_LI}


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f["name"])
def test_a_reference_encoder_string_decodes_to_what_it_encodes(fixture: dict[str, Any]) -> None:
    tc, encodes = decode(fixture["tc_string"]), fixture["encodes"]
    assert sorted(tc.purposes_consent) == encodes["purposes_consent"]
    assert sorted(tc.purposes_li) == encodes["purposes_li"]
    assert sorted(tc.vendor_consents) == encodes["vendor_consents"]
    assert sorted(tc.vendor_li) == encodes["vendor_li"]
    assert (tc.cmp_id, tc.last_updated) == (300, datetime(2025, 6, 3, tzinfo=UTC))
    for restriction in encodes["restrictions"]:
        kind = TYPES[restriction["type"]]
        assert all(
            tc.restriction(restriction["purpose"], v) == kind for v in restriction["vendors"]
        )
    covered = {(r["purpose"], v) for r in encodes["restrictions"] for v in r["vendors"]}
    others = [(p, v) for p in range(1, 12) for v in (42, 749, 755, 761) if (p, v) not in covered]
    assert all(tc.restriction(p, v) is None for p, v in others)
    publisher = encodes["publisher"]
    if publisher is None:
        assert tc.publisher is None
    else:
        assert tc.publisher is not None
        assert sorted(tc.publisher.purposes_consent) == publisher["purposes_consent"]
        assert sorted(tc.publisher.purposes_li) == publisher["purposes_li"]
    assert tc.disclosed_vendors == {42, 755}


def test_truncated_publisher_restrictions_are_rejected() -> None:
    restrictions = Bits().uint(3, 12).uint(2, 6).uint(1, 2).entries([(1, 1)])
    with pytest.raises(TCFError, match="truncated"):
        decode(core(restrictions=restrictions).encode())


def test_is_service_specific_0_is_rejected() -> None:
    with pytest.raises(TCFError, match="IsServiceSpecific"):
        decode(core(service_specific=0).encode())


def test_policy_version_3_is_rejected() -> None:
    with pytest.raises(TCFError, match="TcfPolicyVersion 3"):
        decode(core(policy=3).encode())


def test_policy_version_4_is_accepted() -> None:
    assert decode(core(policy=4).encode()).policy_version == 4


def test_version_1_is_rejected() -> None:
    with pytest.raises(TCFError, match="version 1"):
        decode(core(version=1).encode())


def test_the_2_0_spec_version_1_example_is_rejected() -> None:
    with pytest.raises(TCFError, match="version 1"):
        decode(SPEC_2_0_VERSION_1)


def test_truncated_string_is_rejected() -> None:
    encoded = core(vendor_consents=Bits().bitfield([1, 600], 600)).encode()
    with pytest.raises(TCFError, match="truncated: VendorConsents BitField"):
        decode(encoded[:60])


def test_truncated_spec_example_is_rejected() -> None:
    with pytest.raises(TCFError, match="truncated"):
        decode_fields(SPEC_2_3.split(".")[0][:30])


def test_truncated_disclosed_vendors_segment_is_rejected() -> None:
    segment = disclosed(Bits().bitfield([1, 404], 404))
    with pytest.raises(TCFError, match="truncated: DisclosedVendors"):
        decode(core().encode() + "." + segment[:20])


@pytest.mark.parametrize("bad", ["CQSbk4+QSbk4", "CQSbk4/QSbk4", "CQSbk4AQ=", "CQS bk4", "CQ!bk4"])
def test_bad_base64_is_rejected(bad: str) -> None:
    with pytest.raises(TCFError, match="invalid base64url character"):
        decode(bad)


def test_bad_base64_in_a_later_segment_is_rejected() -> None:
    with pytest.raises(TCFError, match="invalid base64url character"):
        decode(core().encode() + ".IDKQ*A4")


def test_empty_string_is_rejected() -> None:
    with pytest.raises(TCFError, match="empty"):
        decode("")


def test_empty_segment_after_a_dot_is_rejected() -> None:
    with pytest.raises(TCFError, match="empty"):
        decode(core().encode() + ".")


def test_unknown_segment_type_is_rejected() -> None:
    with pytest.raises(TCFError, match="segment type 5"):
        decode(core().encode() + "." + segment(5, Bits().uint(0, 21)))


def test_created_and_last_updated_decode_to_utc_datetimes() -> None:
    created = datetime(2024, 2, 29, 12, 30, 15, 700_000, tzinfo=UTC)
    updated = datetime(2025, 6, 3, tzinfo=UTC)
    tc = decode(
        core(
            created=round(created.timestamp() * 10), last_updated=round(updated.timestamp() * 10)
        ).encode()
    )
    assert tc.created == created
    assert tc.last_updated == updated
    assert tc.created.utcoffset() is not None


def test_errors_are_value_errors_with_a_one_line_message() -> None:
    with pytest.raises(ValueError) as info:
        decode(core(policy=1).encode())
    assert "\n" not in str(info.value)


def test_a_language_code_beyond_z_is_rejected() -> None:
    bits = core(purposes=[1])
    # ConsentLanguage sits after Version, Created, LastUpdated, CmpId, CmpVersion, ConsentScreen.
    start = 6 + 36 + 36 + 12 + 12 + 6
    bits.bits = bits.bits[:start] + "111111" + bits.bits[start + 6 :]
    with pytest.raises(TCFError, match="ConsentLanguage"):
        decode(bits.encode())


def test_two_disclosed_vendors_segments_are_rejected() -> None:
    once = disclosed(Bits().bitfield([1], 1))
    with pytest.raises(TCFError, match="more than one DisclosedVendors"):
        decode(f"{core(purposes=[1]).encode()}.{once}.{once}")
