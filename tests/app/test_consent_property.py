"""Property: for any sequence of grants, refusals, withdrawals and hits (with or without a
subject, GPC, DNT or a TCF string), a hit is recorded if and only if SPEC §4.1 allowed it when
it arrived, with the basis SPEC names. The expectation comes from `Model`, a plain re-reading
of §4.1 and §5 over the policy's TOML file, written without consent/decide.py."""

import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from app.base.keys import KeyRing
from app.base.settings import Settings
from app.main import create_app
from tests.factories import (
    CHROME,
    auth,
    make_key,
    make_site,
    settings_for,
    settle,
    subject_id,
    table_rows,
)
from tests.tcf_strings import Bits, core, segment

Client = TestClient[Any]
PURPOSES = ("analytics", "marketing", "email")
KINDS = ("pageview", "open", "click", "conversion")
SUBJECTS = 3
# (policy, the site's jurisdiction): opt-in, opt-in overridden to opt-out, opt-out, and
# opt-in for a vendor's pixel (gdpr-strict with `[tcf] vendor_id = 755`).
SITES = (
    ("gdpr-strict", "eu"),
    ("gdpr-strict", "us-ca"),
    ("ccpa", "us-ca"),
    ("gdpr-vendor", "eu"),
)
VENDOR = 755
NOT_ALLOWED, REQUIRE_CONSENT, REQUIRE_LI = 0, 1, 2  # the TCF's RestrictionType values
# The shipped ccpa policy has no [tcf] section and lets DNT deny nothing: the copy the tests
# run on has both, so that every step of §4.1 is reachable under an opt-out policy too.
CCPA_ADDITIONS = """
[tcf]
vendor_id = 0
purposes = { analytics = [1, 8], marketing = [1, 7] }
"""
PROPERTY = settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Grant(msgspec.Struct, frozen=True):
    subject: int
    purposes: dict[str, bool]


class Withdraw(msgspec.Struct, frozen=True):
    subject: int


class Tcf(msgspec.Struct, frozen=True):
    """A TC string: `valid` False sends garbage; `purposes` (consent) and `li` go to the core
    segment with vendor 755's consent (`vendor`) and LI (`vendor_li`), and one publisher
    restriction (purpose, type, vendor); when `publisher` is given, its purposes go to a
    Publisher TC segment."""

    valid: bool
    applies: bool
    purposes: frozenset[int] = frozenset()
    publisher: frozenset[int] | None = None
    li: frozenset[int] = frozenset()
    vendor: bool = False
    vendor_li: bool = False
    restriction: tuple[int, int, int] | None = None

    def params(self) -> dict[str, str]:
        text = "not-a-tc-string"
        if self.valid:
            restrictions = Bits().uint(0, 12)
            if self.restriction is not None:
                purpose, kind, vendor = self.restriction
                restrictions = Bits().uint(1, 12).uint(purpose, 6).uint(kind, 2)
                restrictions.entries([(vendor, vendor)])
            text = core(
                purposes=self.purposes,
                purposes_li=self.li,
                vendor_consents=Bits().bitfield([VENDOR] if self.vendor else [], VENDOR),
                vendor_li=Bits().bitfield([VENDOR] if self.vendor_li else [], VENDOR),
                restrictions=restrictions,
            ).encode()
            if self.publisher is not None:
                body = Bits().ids(self.publisher, 24).ids([], 24).uint(0, 6)
                text += "." + segment(3, body)
        return {"gdpr": "1" if self.applies else "0", "gdpr_consent": text}


class Hit(msgspec.Struct, frozen=True):
    subject: int | None
    kind: str
    gpc: bool
    dnt: bool
    tcf: Tcf | None


Step = Grant | Withdraw | Hit


class Model:
    """SPEC §4.1 "Decision", read straight off the policy file."""

    def __init__(self, policy_file: Path, jurisdiction: str) -> None:
        self.policy = tomllib.loads(policy_file.read_text())
        self.jurisdiction = jurisdiction
        self.registry: dict[int, dict[str, bool]] = {}

    def apply(self, step: Grant | Withdraw) -> None:
        if isinstance(step, Grant):
            self.registry.setdefault(step.subject, {}).update(step.purposes)
        else:  # withdrawal: every purpose of the policy is denied from now on
            self.registry[step.subject] = dict.fromkeys(self.policy["purposes"], False)

    def tcf_says(self, purpose: str, tcf: Tcf | None) -> bool | None:
        """None where TCF does not speak. First party (vendor_id 0): the Publisher TC segment,
        when there is one. A vendor: each mapped TCF purpose by consent (the purpose's and the
        vendor's), unless a restriction on it for this vendor forbids it or requires
        legitimate interest (then the LI bits, never for purpose 1)."""
        section = self.policy.get("tcf")
        if tcf is None or not tcf.valid or not tcf.applies or section is None:
            return None
        if purpose not in section["purposes"]:
            return None
        mapped = section["purposes"][purpose]
        if section["vendor_id"] == 0:
            if tcf.publisher is None:
                return None
            return all(p in tcf.publisher for p in mapped)
        assert section["vendor_id"] == VENDOR
        for p in mapped:
            kind = None
            if tcf.restriction is not None and tcf.restriction[::2] == (p, VENDOR):
                kind = tcf.restriction[1]
            if kind == NOT_ALLOWED:
                return False
            if kind == REQUIRE_LI:
                if p == 1 or p not in tcf.li or not tcf.vendor_li:
                    return False
            elif p not in tcf.purposes or not tcf.vendor:
                return False
        return True

    def purpose(self, purpose: str, hit: Hit) -> tuple[bool, str]:
        """(allowed, basis kind)."""
        held = self.registry.get(hit.subject, {}) if hit.subject is not None else {}
        by_tcf = self.tcf_says(purpose, hit.tcf)
        if purpose in held:
            allowed, basis = held[purpose], "consent"
        elif by_tcf is not None:
            allowed, basis = by_tcf, "tcf"
        else:
            override = self.policy.get("jurisdictions", {}).get(self.jurisdiction, {})
            default = override.get(purpose, self.policy["purposes"][purpose]["default"])
            allowed, basis = default == "granted", "default"
        signals = self.policy["signals"]
        sale_or_share = {n for n, p in self.policy["purposes"].items() if p.get("sale_or_share")}
        if hit.gpc and purpose in set(signals["gpc"]) | sale_or_share:
            allowed = False
        if hit.dnt and purpose in signals["dnt"]:
            allowed = False
        return allowed, basis

    def expect(self, hit: Hit) -> tuple[int | None, str, tuple[tuple[str, str], ...]] | None:
        """What the events table gains from `hit`: (subject, kind, basis kind per purpose)."""
        if hit.kind in self.policy["require_signed_pixels"]:
            return None  # these are recorded only from a signed `t`, which no step sends
        kinds = self.policy["kinds"]
        needed = kinds.get(hit.kind, kinds.get("*", []))
        decided = {p: self.purpose(p, hit) for p in needed}
        if not needed or not all(allowed for allowed, _ in decided.values()):
            return None  # neither policy has anonymous_counting: nothing else is counted
        basis = tuple(sorted((p, kind) for p, (_, kind) in decided.items()))
        if hit.gpc and hit.subject is not None:  # remembered, for audiences to leave them out
            basis = tuple(sorted((*basis, ("signal:gpc", "1"))))
        return hit.subject, hit.kind, basis


def valid_tcf(applies: st.SearchStrategy[bool], restricted: bool = False) -> st.SearchStrategy[Tcf]:
    """`restricted`: always with a publisher restriction."""
    # Mostly sets that grant one mapped purpose or both (analytics = 1+8, marketing = 1+7);
    # the Publisher TC segment is drawn apart from the core, absent, agreeing or not.
    ids = st.sampled_from([frozenset({1, 8}), frozenset({1, 7}), frozenset({1, 7, 8})])
    ids = ids | st.frozensets(st.sampled_from([1, 7, 8]))
    restriction = st.tuples(
        st.sampled_from([1, 7, 8]),
        st.sampled_from([NOT_ALLOWED, REQUIRE_CONSENT, REQUIRE_LI]),
        st.sampled_from([VENDOR, VENDOR, 42]),
    )
    return st.builds(
        Tcf,
        valid=st.just(True),
        applies=applies,
        purposes=ids,
        publisher=st.none() | ids,
        li=st.frozensets(st.sampled_from([1, 7, 8])),
        vendor=st.sampled_from([True, True, False]),
        vendor_li=st.booleans(),
        restriction=restriction if restricted else st.none() | restriction,
    )


def tcf_signals() -> st.SearchStrategy[Tcf | None]:
    valid = valid_tcf(st.booleans())
    garbage = st.builds(Tcf, valid=st.just(False), applies=st.just(True))
    return st.none() | valid | valid | garbage


def steps() -> st.SearchStrategy[list[Step]]:
    subject = st.integers(0, SUBJECTS - 1)
    # Mostly grants (of a purpose or two), and hits with a subject: those reach the registry
    # step of §4.1; withdrawals and hits without a subject are rarer. Hypothesis's own choice
    # among alternatives is uniform and leans to the first, hence the explicit weights.
    answer = st.sampled_from([True, True, False])
    grant = st.builds(
        Grant, subject, st.dictionaries(st.sampled_from(PURPOSES), answer, min_size=1)
    )
    hit = st.builds(
        Hit,
        subject=st.sampled_from([None, 0, 1, 2, 0, 1]),
        kind=st.sampled_from(KINDS),
        gpc=st.sampled_from([False, False, True]),
        dnt=st.sampled_from([False, False, True]),
        tcf=tcf_signals(),
    )
    kinds: dict[str, st.SearchStrategy[Step]] = {
        "hit": hit,
        "grant": grant,
        "withdraw": st.builds(Withdraw, subject),
    }
    step = st.sampled_from(["hit", "grant", "hit", "grant", "hit", "withdraw"]).flatmap(kinds.get)
    return st.lists(step, min_size=4, max_size=12)


@pytest.fixture
def policies_with_tcf(policies_copy: Path) -> Path:
    ccpa = policies_copy / "ccpa.toml"
    text = ccpa.read_text().replace("dnt = []", 'dnt = ["analytics"]')
    ccpa.write_text(text + CCPA_ADDITIONS)
    strict = (policies_copy / "gdpr-strict.toml").read_text()
    vendor = strict.replace('name = "gdpr-strict"', 'name = "gdpr-vendor"')
    vendor = vendor.replace("vendor_id = 0", f"vendor_id = {VENDOR}")
    (policies_copy / "gdpr-vendor.toml").write_text(vendor)
    return policies_copy


@pytest.fixture
def app_settings(database_url: str, policies_with_tcf: Path) -> Settings:
    return settings_for(database_url, policies_dir=policies_with_tcf)


@pytest.fixture
def app_client(app_settings: Settings) -> Iterator[Client]:
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


def run_steps(
    client: Client,
    settings: Settings,
    policy: str,
    jurisdiction: str,
    sequence: list[Step],
    settle_each: bool = True,
) -> tuple[Counter[Any], Counter[Any]]:
    """Plays `sequence` on a new site; returns (recorded, expected) events as counters.
    `settle_each`: wait for the writer after every hit, so that it decides each hit before
    the next step (else hits may wait in the queue while the registry changes)."""
    site = make_site(settings, policy=policy, jurisdiction=jurisdiction)
    admin = auth(make_key(settings, site))
    subjects = [subject_id() for _ in range(SUBJECTS)]
    model = Model(settings.policies_dir / f"{policy}.toml", jurisdiction)
    expected: Counter[Any] = Counter()
    for step in sequence:
        if isinstance(step, Grant):
            body = {"subject": subjects[step.subject], "purposes": step.purposes}
            given_ = client.post(f"/v1/sites/{site}/consent", json=body, headers=admin)
            assert given_.status_code == 201
            model.apply(step)
        elif isinstance(step, Withdraw):
            url = f"/v1/sites/{site}/consent/{subjects[step.subject]}"
            assert client.delete(url, headers=admin).status_code == 200
            model.apply(step)
        else:
            params = {"k": step.kind, **(step.tcf.params() if step.tcf else {})}
            if step.subject is not None:
                params["u"] = subjects[step.subject]
            headers = {"User-Agent": CHROME}
            headers.update({"Sec-GPC": "1"} if step.gpc else {})
            headers.update({"DNT": "1"} if step.dnt else {})
            assert client.get(f"/p/{site}/pixel.gif", params=params, headers=headers).is_success
            if settle_each:
                settle(client)
            if (event := model.expect(step)) is not None:
                expected[event] += 1
    settle(client)
    keyring = KeyRing(settings.secret_key)
    pseudonyms = {keyring.pseudonym(site, s): n for n, s in enumerate(subjects)}
    recorded: Counter[Any] = Counter(
        (
            pseudonyms[row["subject"]] if row["subject"] is not None else None,
            row["kind"],
            tuple(sorted((p, basis.split(":")[0]) for p, basis in row["basis"].items())),
        )
        for row in table_rows(settings, "events", site=site)
    )
    return recorded, expected


@pytest.mark.slow
@PROPERTY
@given(site=st.sampled_from(SITES), sequence=steps())
def test_a_hit_is_recorded_exactly_when_the_consent_decision_allowed_it_on_arrival(
    app_client: Client, app_settings: Settings, site: tuple[str, str], sequence: list[Step]
) -> None:
    policy, jurisdiction = site
    recorded, expected = run_steps(app_client, app_settings, policy, jurisdiction, sequence)
    for basis in sorted({b for _, _, bases in expected for _, b in bases}):
        event(f"a hit recorded on a {basis} basis")  # --hypothesis-show-statistics
    assert recorded == expected


def vendor_hits() -> st.SearchStrategy[list[Step]]:
    """Hits carrying a TC string that applies, at a vendor's pixel where the registry is
    mostly silent: the publisher restrictions and LI bits decide."""
    hit = st.builds(
        Hit,
        subject=st.sampled_from([None, 0, 1, 2]),
        kind=st.sampled_from(["pageview", "conversion", "click"]),
        gpc=st.just(False),
        dnt=st.just(False),
        tcf=valid_tcf(st.just(True), restricted=True),
    )
    return st.lists(hit, min_size=4, max_size=12)


@pytest.mark.slow
@PROPERTY
@given(sequence=vendor_hits())
def test_a_vendor_pixel_records_a_hit_exactly_when_its_tc_string_allows_the_vendor(
    app_client: Client, app_settings: Settings, sequence: list[Step]
) -> None:
    recorded, expected = run_steps(app_client, app_settings, "gdpr-vendor", "eu", sequence)
    for step in sequence:
        if isinstance(step, Hit) and step.tcf and step.tcf.restriction:
            purpose, kind, vendor = step.tcf.restriction
            event(f"restriction type {kind} on purpose {purpose} for vendor {vendor}")
    assert recorded == expected


QUEUE_SECONDS = 1.0  # longer than a short sequence takes: its hits wait for the writer


@pytest.mark.slow
@settings(parent=PROPERTY, max_examples=8)
@given(site=st.sampled_from(SITES), sequence=steps())
def test_a_hit_is_decided_on_the_consent_it_met_even_when_it_changed_before_the_write(
    app_client: Client, app_settings: Settings, site: tuple[str, str], sequence: list[Step]
) -> None:
    """The same model, with the hits left in the writer's queue while consent changes: SPEC
    §4.1 decides a hit as of its arrival, not as of when its batch is written."""
    # The queue's batch window, widened so that the hits of a sequence share one batch.
    app_client.app.state.ctx.ingest._batch_seconds = QUEUE_SECONDS
    policy, jurisdiction = site
    recorded, expected = run_steps(
        app_client, app_settings, policy, jurisdiction, sequence, settle_each=False
    )
    assert recorded == expected
