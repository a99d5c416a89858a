"""The hit path's steps, one test per Reason a hit can end with."""

from datetime import UTC, datetime

import pytest

from app.base.event_fields import ATTRIBUTION_FIELDS, DIMENSIONS, EventFields
from app.base.keys import KeyRing
from app.base.sites import SiteOut
from app.base.tables import Event, RollupDetail
from app.hits.arrival import Hit
from app.hits.event import EventRow, Pending
from app.hits.steps import Dropped, Reason, known_site, prepare_at_site, settle
from consent.decide import Record
from consent.policy import load_policies
from retention.dsar import ExportedEvent
from tests.factories import CHROME, GOOGLEBOT, POLICIES, SECRET

KEYS = KeyRing(SECRET)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
SITE = SiteOut("news", "gdpr-strict", [], "eu", datetime(2026, 1, 1, tzinfo=UTC))
POLICIES_BY_NAME = load_policies(POLICIES)
POLICY = POLICIES_BY_NAME["gdpr-strict"]  # "open" pixels must be signed; pageview: analytics


def hit(**fields: str) -> Hit:
    return Hit(site="news", user_agent=CHROME, **fields)


def pending(**fields: str) -> Pending:
    return prepare_at_site(KEYS, SITE, POLICY, hit(**fields), NOW)


def reason_of_dropping(**fields: str) -> Reason:
    with pytest.raises(Dropped) as dropped:
        pending(**fields)
    return dropped.value.reason


def granted(analytics: bool) -> dict[str, Record]:
    return {"analytics": Record(analytics, POLICY.version, "entry-1", None, NOW)}


def test_a_hit_for_a_site_nobody_created_is_dropped_as_unknown_site() -> None:
    with pytest.raises(Dropped) as dropped:
        known_site(None, POLICIES_BY_NAME)
    assert dropped.value.reason is Reason.UNKNOWN_SITE


def test_a_hit_for_a_site_whose_policy_is_gone_is_dropped_as_unknown_site() -> None:
    orphan = SiteOut("old", "retired-policy", [], "eu", NOW)
    with pytest.raises(Dropped) as dropped:
        known_site(orphan, POLICIES_BY_NAME)
    assert dropped.value.reason is Reason.UNKNOWN_SITE


@pytest.mark.parametrize(
    "fields",
    [{"kind": "Page View"}, {"subject": "x" * 257}, {"value": "a lot"}, {"currency": "euro"}],
)
def test_a_hit_with_input_out_of_bounds_is_dropped_as_invalid(fields: dict[str, str]) -> None:
    assert reason_of_dropping(**fields) is Reason.INVALID


def test_an_unsigned_open_where_the_policy_requires_signed_ones_is_dropped_as_unsigned() -> None:
    assert reason_of_dropping(kind="open", subject="alice") is Reason.UNSIGNED


def test_a_crawler_is_dropped_as_bot() -> None:
    with pytest.raises(Dropped) as dropped:
        prepare_at_site(KEYS, SITE, POLICY, Hit(site="news", user_agent=GOOGLEBOT), NOW)
    assert dropped.value.reason is Reason.BOT


def test_a_hit_without_consent_is_not_recorded_as_no_consent() -> None:
    outcome = settle(POLICY, pending(subject="alice"), granted(False))
    assert (outcome.would_record, outcome.reason) == (False, Reason.NO_CONSENT)


def test_a_hit_whose_subject_was_erased_since_is_not_recorded_as_erased() -> None:
    outcome = settle(POLICY, pending(subject="alice"), None)
    assert (outcome.would_record, outcome.reason, outcome.event) == (False, Reason.ERASED, None)


def test_a_consented_hit_is_recorded_under_its_basis() -> None:
    outcome = settle(POLICY, pending(subject="alice", page="/a"), granted(True))
    assert (outcome.would_record, outcome.reason) == (True, Reason.RECORDED)
    assert outcome.event is not None and outcome.event.basis == {"analytics": "consent:entry-1"}


def test_the_events_fields_come_from_one_definition_that_the_tables_hold() -> None:
    stored = set(Event.__table__.columns.keys())
    assert set(EventRow.__struct_fields__) == stored
    assert set(ExportedEvent.__struct_fields__) == set(EventFields.__struct_fields__)
    assert set(EventFields.__struct_fields__) == stored - {"site", "id", "subject"}
    assert set(ATTRIBUTION_FIELDS) <= set(Hit.__struct_fields__)
    assert set(DIMENSIONS) <= set(RollupDetail.__table__.columns.keys())
