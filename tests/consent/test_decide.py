"""The consent decision (SPEC §4.1 "Decision"): registry, then TCF, then default; signals deny."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consent.decide import Record, Signals, decide, decide_purpose
from consent.policy import Policy, load_policies, load_policy
from consent.tcf import TCString, decode
from tests.factories import POLICIES
from tests.tcf_strings import REFERENCE, Bits, core, publisher

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
TTL = 395 * DAY  # the consent_ttl_days every purpose of the test policy has by default
RECORD_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
VERSION = "2026-01"
CMP_ID = 300  # what tests.tcf_strings.core writes, with LastUpdated on 2025-06-03
TCF_BASIS = f"tcf:cmp={CMP_ID}:updated=2025-06-03"
NO_SIGNALS = Signals()

# analytics is opt-in (granted in us-ca), marketing and sharing are opt-out sale/share purposes,
# personalisation is opt-out and listed for GPC, email is opt-in and has no TCF mapping.
POLICY_TEXT = """\
name = "test"
version = "{version}"
reconsent_on_change = {reconsent_on_change}
anonymous_counting = {anonymous_counting}

[purposes.analytics]
default = "denied"
[purposes.marketing]
default = "granted"
sale_or_share = true
[purposes.sharing]
default = "granted"
sale_or_share = true
[purposes.personalisation]
default = "granted"
[purposes.email]
default = "denied"

[kinds]
pageview = ["analytics"]
open = ["email"]
conversion = ["analytics", "marketing"]
"*" = ["personalisation"]

[signals]
gpc = ["personalisation"]
dnt = ["analytics"]

[tcf]
vendor_id = {vendor_id}
purposes = {{ analytics = [1, 8], marketing = [1, 7] }}

[jurisdictions]
us-ca = {{ analytics = "granted" }}
"""


def make_policy(
    directory: Path,
    *,
    reconsent_on_change: bool = True,
    anonymous_counting: bool = False,
    vendor_id: int = 0,
) -> Policy:
    path = directory / "test.toml"
    path.write_text(
        POLICY_TEXT.format(
            version=VERSION,
            reconsent_on_change=str(reconsent_on_change).lower(),
            anonymous_counting=str(anonymous_counting).lower(),
            vendor_id=vendor_id,
        )
    )
    return load_policy(path)


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return make_policy(tmp_path)


def real(name: str) -> Policy:
    return load_policies(POLICIES)[name]


def record(
    granted: bool = True,
    version: str = VERSION,
    expires_at: datetime | None = None,
    updated_at: datetime | None = None,
) -> Record:
    return Record(granted, version, str(RECORD_ID), expires_at, updated_at)


def tcf(purposes: list[int], vendors: list[int] | None = None) -> TCString:
    """`purposes` in the core segment and in a Publisher TC segment alike, so that they
    speak for a first party and, with `vendors`' consent, for a vendor."""
    consents = Bits().bitfield(vendors, max(vendors)) if vendors else None
    text = core(purposes=purposes, vendor_consents=consents).encode()
    return decode(f"{text}.{publisher(purposes)}")


def tcf_signals(
    purposes: list[int], vendors: list[int] | None = None, gdpr_applies: bool = True
) -> Signals:
    return Signals(gdpr_applies=gdpr_applies, tcf=tcf(purposes, vendors))


# --- 1. the registry decides first -------------------------------------------------------------

REGISTRY = [
    # record, reconsent_on_change, allowed, reason
    pytest.param(record(), True, True, "consent_granted", id="granted without expiry"),
    pytest.param(record(expires_at=NOW + SECOND), True, True, "consent_granted", id="1s before"),
    pytest.param(record(expires_at=NOW), True, False, "consent_expired", id="at expiry"),
    pytest.param(record(expires_at=NOW - SECOND), True, False, "consent_expired", id="1s after"),
    pytest.param(record(granted=False), True, False, "consent_withdrawn", id="withdrawn"),
    # The policy's consent_ttl_days (395 here) counts from the last change, expiry stored or not.
    pytest.param(
        record(updated_at=NOW - TTL + SECOND), True, True, "consent_granted", id="ttl 1s before"
    ),
    pytest.param(record(updated_at=NOW - TTL), True, False, "consent_expired", id="ttl reached"),
    pytest.param(
        record(expires_at=NOW + 30 * DAY, updated_at=NOW - TTL),
        True,
        False,
        "consent_expired",
        id="a shortened ttl beats the stored expiry",
    ),
    pytest.param(
        record(expires_at=NOW, updated_at=NOW - DAY),
        True,
        False,
        "consent_expired",
        id="a stored expiry sooner than the ttl",
    ),
    pytest.param(record(version="2025-07"), True, False, "consent_voided", id="older version"),
    pytest.param(
        record(version="2025-07"), False, True, "consent_granted", id="older version kept"
    ),
    pytest.param(
        record(granted=False, version="2025-07"),
        True,
        False,
        "consent_withdrawn",
        id="withdrawn beats voided",
    ),
]


@pytest.mark.parametrize(("given", "reconsent", "allowed", "reason"), REGISTRY)
def test_a_registry_record_decides_the_purpose_whatever_the_default(
    tmp_path: Path, given: Record, reconsent: bool, allowed: bool, reason: str
) -> None:
    policy = make_policy(tmp_path, reconsent_on_change=reconsent)
    for purpose in ("analytics", "personalisation"):  # one opt-in, one opt-out default
        decision = decide_purpose(policy, purpose, given, NO_SIGNALS, "eu", NOW)
        assert (decision.allowed, decision.reason) == (allowed, reason)
        assert decision.basis == (f"consent:{RECORD_ID}" if allowed else None)


def test_a_withdrawn_consent_denies_even_when_the_default_grants(policy: Policy) -> None:
    decision = decide_purpose(policy, "personalisation", record(False), NO_SIGNALS, "us-ca", NOW)
    assert (decision.allowed, decision.reason) == (False, "consent_withdrawn")


def test_a_registry_record_overrides_a_tcf_string_that_grants(policy: Policy) -> None:
    signals = tcf_signals([1, 8])
    decision = decide_purpose(policy, "analytics", record(False), signals, "eu", NOW)
    assert (decision.allowed, decision.reason) == (False, "consent_withdrawn")


# --- 2. then a valid TCF string, only where the registry is silent -----------------------------

TCF_CASES = [
    # purpose, TCF purposes consented, vendor consents, policy vendor_id, allowed, reason
    pytest.param("analytics", [1, 8], None, 0, True, "tcf_granted", id="all mapped ids"),
    pytest.param("analytics", [1, 7], None, 0, False, "tcf_denied", id="one mapped id missing"),
    pytest.param("analytics", [], None, 0, False, "tcf_denied", id="no purposes"),
    pytest.param("marketing", [1, 7], None, 0, True, "tcf_granted", id="opt-out purpose granted"),
    pytest.param("marketing", [1, 8], None, 0, False, "tcf_denied", id="opt-out purpose denied"),
    pytest.param("analytics", [1, 8], [42], 42, True, "tcf_granted", id="vendor consented"),
    pytest.param("analytics", [1, 8], [41], 42, False, "tcf_denied", id="other vendor only"),
    pytest.param("analytics", [1, 8], None, 42, False, "tcf_denied", id="no vendor consents"),
]


@pytest.mark.parametrize(
    ("purpose", "tcf_purposes", "vendors", "vendor_id", "allowed", "reason"), TCF_CASES
)
def test_without_a_record_a_tcf_string_decides_through_the_policy_mapping(
    tmp_path: Path,
    purpose: str,
    tcf_purposes: list[int],
    vendors: list[int] | None,
    vendor_id: int,
    allowed: bool,
    reason: str,
) -> None:
    policy = make_policy(tmp_path, vendor_id=vendor_id)
    signals = tcf_signals(tcf_purposes, vendors)
    decision = decide_purpose(policy, purpose, None, signals, "eu", NOW)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    assert decision.basis == (TCF_BASIS if allowed else None)


# TC strings from the IAB Tech Lab's reference encoder (tests/tcf/make_fixtures.mjs) and what
# each decides for analytics (TCF 1+8) and marketing (TCF 1+7): first party (vendor_id = 0),
# then vendor 755. "silent": TCF does not speak, the default decides (analytics denied and
# marketing granted in "eu").
G, D, S = "granted", "denied", "silent"
FIXTURE_DECISIONS = {
    # name: (first party analytics, marketing), (vendor 755 analytics, marketing)
    "core_only": ((S, S), (G, G)),
    "publisher_empty": ((D, D), (G, G)),
    "publisher_only": ((G, G), (D, D)),
    "both_agree": ((G, G), (G, G)),
    "publisher_partial": ((G, D), (G, G)),
    "no_vendor_consent": ((G, G), (D, D)),
    "other_vendor_consent": ((S, S), (D, D)),
    "not_allowed_p1_755": ((G, G), (D, D)),
    "not_allowed_p7_755": ((S, S), (G, D)),
    "not_allowed_p1_other": ((S, S), (G, G)),
    "not_allowed_p8_range": ((S, S), (D, G)),
    "require_consent_p8_given": ((S, S), (G, G)),
    "require_consent_p8_li_only": ((S, S), (D, G)),
    "require_consent_p8_other": ((S, S), (G, G)),
    "require_li_p8_given": ((S, S), (G, G)),
    "require_li_p8_no_li": ((S, S), (D, G)),
    "require_li_p8_no_vendor_li": ((S, S), (D, G)),
    "require_li_p1": ((S, S), (D, D)),
    "require_li_p8_other": ((S, S), (D, G)),
}
SAID = {
    "tcf_granted": G,
    "tcf_denied": D,
    "default_denied": S,
    "default_granted": S,
}


def test_every_reference_fixture_has_an_expected_decision() -> None:
    assert set(FIXTURE_DECISIONS) == set(REFERENCE)


@pytest.mark.parametrize("name", FIXTURE_DECISIONS)
@pytest.mark.parametrize("mode", ["first party", "vendor 755"])
def test_a_reference_tc_string_decides_as_spec_4_1_step_2_says(
    tmp_path: Path, name: str, mode: str
) -> None:
    """First party: the Publisher TC segment, or nothing when absent. Vendor: the core
    purposes, the vendor's consent, and the publisher restrictions on that vendor."""
    vendor_id = 0 if mode == "first party" else 755
    policy = make_policy(tmp_path, vendor_id=vendor_id)
    signals = Signals(tcf=decode(REFERENCE[name]))
    said = tuple(
        SAID[decide_purpose(policy, purpose, None, signals, "eu", NOW).reason]
        for purpose in ("analytics", "marketing")
    )
    first_party, vendor = FIXTURE_DECISIONS[name]
    assert said == (first_party if vendor_id == 0 else vendor)


def test_a_first_party_string_without_a_publisher_segment_leaves_it_to_the_default(
    tmp_path: Path,
) -> None:
    signals = Signals(tcf=decode(core(purposes=[1, 7, 8]).encode()))
    for jurisdiction, default in (("eu", "default_denied"), ("us-ca", "default_granted")):
        decision = decide_purpose(
            make_policy(tmp_path), "analytics", None, signals, jurisdiction, NOW
        )
        assert (decision.reason, decision.basis is None) == (default, default == "default_denied")


def test_legitimate_interest_never_allows_purpose_1_even_where_required(tmp_path: Path) -> None:
    """The reference encoder will not write LI for purpose 1; a string that does is still
    not enough."""
    restriction = Bits().uint(1, 12).uint(1, 6).uint(2, 2).entries([(755, 755)])
    lis = Bits().bitfield([755], 755)
    text = core(purposes=[1, 8], purposes_li=[1, 8], vendor_li=lis, restrictions=restriction)
    signals = Signals(tcf=decode(text.encode()))
    policy = make_policy(tmp_path, vendor_id=755)
    decision = decide_purpose(policy, "analytics", None, signals, "eu", NOW)
    assert (decision.allowed, decision.reason) == (False, "tcf_denied")


def test_gdpr_0_makes_the_tcf_string_ignored_and_the_default_decide(policy: Policy) -> None:
    signals = tcf_signals([1, 8], gdpr_applies=False)
    decision = decide_purpose(policy, "analytics", None, signals, "eu", NOW)
    assert (decision.allowed, decision.reason) == (False, "default_denied")


def test_a_purpose_without_a_tcf_mapping_falls_through_to_the_default(policy: Policy) -> None:
    signals = tcf_signals(list(range(1, 12)))  # every TCF purpose consented
    decision = decide_purpose(policy, "email", None, signals, "eu", NOW)
    assert (decision.allowed, decision.reason) == (False, "default_denied")


def test_a_policy_without_a_tcf_section_ignores_tcf_strings() -> None:
    decision = decide_purpose(real("ccpa"), "analytics", None, tcf_signals([]), "us-ca", NOW)
    assert (decision.allowed, decision.reason) == (True, "default_granted")


# --- 3. else the policy default, in the request's jurisdiction ---------------------------------

DEFAULTS = [
    # policy, purpose, jurisdiction, allowed
    pytest.param("gdpr-strict", "analytics", "eu", False, id="gdpr analytics eu"),
    pytest.param("gdpr-strict", "analytics", "us-ca", True, id="gdpr analytics us-ca"),
    pytest.param("gdpr-strict", "marketing", "us-ca", True, id="gdpr marketing us-ca"),
    pytest.param("gdpr-strict", "email", "us-ca", False, id="gdpr email not overridden"),
    pytest.param("gdpr-strict", "analytics", "", False, id="gdpr no jurisdiction"),
    pytest.param("ccpa", "analytics", "eu", True, id="ccpa analytics"),
    pytest.param("ccpa", "email", "us-ca", False, id="ccpa email"),
]


@pytest.mark.parametrize(("name", "purpose", "jurisdiction", "allowed"), DEFAULTS)
def test_without_record_or_tcf_the_default_for_the_jurisdiction_decides(
    name: str, purpose: str, jurisdiction: str, allowed: bool
) -> None:
    policy = real(name)
    decision = decide_purpose(policy, purpose, None, NO_SIGNALS, jurisdiction, NOW)
    assert decision.allowed is allowed
    assert decision.reason == ("default_granted" if allowed else "default_denied")
    assert decision.basis == (f"default:{name}@2025-07-07" if allowed else None)


# --- 4. signals may only deny ------------------------------------------------------------------

GPC = Signals(gpc=True)
DNT = Signals(dnt=True)

SIGNALS = [
    # purpose, jurisdiction, record, signals, allowed, reason
    pytest.param("personalisation", "eu", None, GPC, False, "gpc", id="gpc denies listed"),
    pytest.param("marketing", "eu", None, GPC, False, "gpc", id="gpc denies unlisted sale"),
    pytest.param("sharing", "eu", None, GPC, False, "gpc", id="gpc denies every sale/share"),
    pytest.param("marketing", "eu", record(), GPC, False, "gpc", id="gpc beats consent"),
    pytest.param("analytics", "us-ca", None, GPC, True, "default_granted", id="gpc spares other"),
    pytest.param("analytics", "us-ca", None, DNT, False, "dnt", id="dnt denies listed"),
    pytest.param("analytics", "eu", record(), DNT, False, "dnt", id="dnt beats consent"),
    pytest.param("marketing", "eu", None, DNT, True, "default_granted", id="dnt spares unlisted"),
    pytest.param("personalisation", "eu", None, DNT, True, "default_granted", id="dnt no gpc"),
]


@pytest.mark.parametrize(
    ("purpose", "jurisdiction", "given", "signals", "allowed", "reason"), SIGNALS
)
def test_gpc_and_dnt_deny_the_purposes_the_policy_and_the_law_name(
    policy: Policy,
    purpose: str,
    jurisdiction: str,
    given: Record | None,
    signals: Signals,
    allowed: bool,
    reason: str,
) -> None:
    decision = decide_purpose(policy, purpose, given, signals, jurisdiction, NOW)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    if not allowed:
        assert decision.basis is None


def test_dnt_denies_nothing_when_the_policy_does_not_list_it() -> None:
    policy = real("ccpa")  # signals.dnt = []
    for purpose in ("analytics", "marketing"):
        decision = decide_purpose(policy, purpose, None, DNT, "us-ca", NOW)
        assert (decision.allowed, decision.reason) == (True, "default_granted")


DENIED_BEFORE_SIGNALS = [
    # purpose, record, tcf purposes, reason that must survive the signals
    pytest.param("analytics", None, None, "default_denied", id="default"),
    pytest.param("analytics", record(False), None, "consent_withdrawn", id="withdrawn"),
    pytest.param("analytics", record(expires_at=NOW), None, "consent_expired", id="expired"),
    pytest.param("marketing", None, [1], "tcf_denied", id="tcf"),
]


@pytest.mark.parametrize(("purpose", "given", "tcf_purposes", "reason"), DENIED_BEFORE_SIGNALS)
def test_signals_never_allow_a_purpose_and_keep_the_original_reason(
    policy: Policy,
    purpose: str,
    given: Record | None,
    tcf_purposes: list[int] | None,
    reason: str,
) -> None:
    tc = tcf(tcf_purposes) if tcf_purposes is not None else None
    signals = Signals(gpc=True, dnt=True, tcf=tc)
    decision = decide_purpose(policy, purpose, given, signals, "eu", NOW)
    assert (decision.allowed, decision.reason, decision.basis) == (False, reason, None)


# --- the decision for a hit: every purpose of its kind -----------------------------------------

CONVERSION = [
    # analytics record, marketing record, record?
    pytest.param(record(), record(), True, id="both allowed"),
    pytest.param(record(), record(False), False, id="marketing withdrawn"),
    pytest.param(None, record(), False, id="analytics by default denied"),
    pytest.param(None, None, False, id="neither"),
]


@pytest.mark.parametrize(("analytics", "marketing", "recorded"), CONVERSION)
def test_a_kind_needing_two_purposes_is_recorded_only_when_both_are_allowed(
    policy: Policy, analytics: Record | None, marketing: Record | None, recorded: bool
) -> None:
    registry = {k: v for k, v in {"analytics": analytics, "marketing": marketing}.items() if v}
    decision = decide(policy, "conversion", registry, NO_SIGNALS, "eu", NOW)
    assert decision.record is recorded
    assert decision.anonymous is False
    assert [p.purpose for p in decision.purposes] == ["analytics", "marketing"]


def test_a_recorded_hit_carries_the_basis_of_each_of_its_purposes(policy: Policy) -> None:
    signals = tcf_signals([1, 7])  # TCF speaks for marketing; analytics comes from the registry
    decision = decide(policy, "conversion", {"analytics": record()}, signals, "eu", NOW)
    assert decision.record is True
    assert decision.basis == {"analytics": f"consent:{RECORD_ID}", "marketing": TCF_BASIS}


def test_a_recorded_hit_allowed_by_default_names_the_policy_and_version(policy: Policy) -> None:
    decision = decide(policy, "pageview", {}, NO_SIGNALS, "us-ca", NOW)
    assert decision.basis == {"analytics": f"default:test@{VERSION}"}


def test_a_hit_that_is_not_recorded_has_no_basis(policy: Policy) -> None:
    decision = decide(policy, "pageview", {}, NO_SIGNALS, "eu", NOW)
    assert (decision.record, decision.anonymous, decision.basis) == (False, False, {})


def test_only_the_purposes_the_kind_needs_are_decided(policy: Policy) -> None:
    registry = {"analytics": record(False), "email": record()}
    decision = decide(policy, "open", registry, NO_SIGNALS, "eu", NOW)
    assert decision.record is True
    assert [p.purpose for p in decision.purposes] == ["email"]


@pytest.mark.parametrize("kind", ["signup", "pageview_v2"])
def test_a_kind_the_policy_does_not_name_takes_the_star_purposes(policy: Policy, kind: str) -> None:
    decision = decide(policy, kind, {}, NO_SIGNALS, "eu", NOW)
    assert [p.purpose for p in decision.purposes] == ["personalisation"]
    assert decision.record is True
    assert decide(policy, kind, {}, GPC, "eu", NOW).record is False  # personalisation is GPC's


def test_anonymous_counting_records_a_denied_hit_without_a_subject(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, anonymous_counting=True)
    decision = decide(policy, "conversion", {}, NO_SIGNALS, "eu", NOW, has_subject=False)
    assert (decision.record, decision.anonymous) == (True, True)
    basis = f"anonymous_counting:test@{VERSION}"
    assert decision.basis == {"analytics": basis, "marketing": basis}


def test_anonymous_counting_never_records_a_subject_who_refused_or_withdrew(
    tmp_path: Path,
) -> None:
    policy = make_policy(tmp_path, anonymous_counting=True)
    withdrawn = {"analytics": record(granted=False), "marketing": record(granted=False)}
    decision = decide(policy, "conversion", withdrawn, NO_SIGNALS, "eu", NOW)
    assert (decision.record, decision.anonymous) == (False, False)


def test_anonymous_counting_stops_at_a_privacy_signal(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, anonymous_counting=True)
    decision = decide(policy, "conversion", {}, GPC, "eu", NOW, has_subject=False)
    assert decision.record is False


def test_anonymous_counting_keeps_the_subject_when_every_purpose_is_allowed(
    tmp_path: Path,
) -> None:
    policy = make_policy(tmp_path, anonymous_counting=True)
    decision = decide(policy, "pageview", {"analytics": record()}, NO_SIGNALS, "eu", NOW)
    assert (decision.record, decision.anonymous) == (True, False)
    assert decision.basis == {"analytics": f"consent:{RECORD_ID}"}


def test_a_kind_the_policy_does_not_know_is_never_recorded_even_when_counting_anonymously(
    tmp_path: Path,
) -> None:
    path = tmp_path / "narrow.toml"
    path.write_text(
        'name = "narrow"\nversion = "1"\nanonymous_counting = true\n'
        '[purposes.analytics]\ndefault = "granted"\n[kinds]\npageview = ["analytics"]\n'
    )
    decision = decide(load_policy(path), "signup", {}, NO_SIGNALS, "eu", NOW)
    assert (decision.record, decision.purposes, decision.basis) == (False, [], {})


def test_the_exempt_policy_counts_page_views_and_link_clicks_without_consent_and_nothing_else() -> (
    None
):
    """policies/gdpr-exempt.toml: the audience-measurement exemption, for its kinds only."""
    exempt = load_policies(POLICIES)["gdpr-exempt"]
    for kind, kept in [
        ("pageview", []),
        ("click", ["campaign", "utm_source", "utm_medium", "utm_campaign"]),
    ]:
        decision = decide(
            exempt, kind, {}, NO_SIGNALS, "eu", NOW, has_subject=False, from_link=True
        )
        assert (decision.record, decision.anonymous) == (True, True), kind
        assert exempt.counted_anonymously(kind) == kept
    # A click the server did not see itself: any pixel may say k=click.
    pixel_click = decide(exempt, "click", {}, NO_SIGNALS, "eu", NOW, has_subject=False)
    assert pixel_click.record is False
    view = decide(exempt, "pageview", {}, NO_SIGNALS, "eu", NOW, has_subject=False)
    assert view.record is True
    for kind in ("open", "conversion", "signup"):
        decision = decide(exempt, kind, {}, NO_SIGNALS, "eu", NOW, has_subject=False)
        assert decision.record is False, kind
        assert exempt.counted_anonymously(kind) is None
    known = decide(exempt, "pageview", {}, NO_SIGNALS, "eu", NOW, has_subject=True)
    assert known.record is False  # about a person: consent first, as under gdpr-strict
    assert load_policies(POLICIES)["gdpr-strict"].counted_anonymously("pageview") is None
