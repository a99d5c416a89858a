"""consent.audiences on both databases: which subjects a rule finds, and which of them are
members: only those whose marketing purpose is allowed now, the rest counted by reason."""

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.base.db import transaction, utcnow
from app.base.tables import Campaign
from app.hits.event import EventRow
from app.hits.writer import write_events
from consent import store
from consent.audiences import GPC_SOURCE, OPT_OUT_SOURCE, Members, Rule, found_by_rule, members
from consent.decide import GPC_SEEN
from consent.policy import load_policies, load_policy
from tests.factories import POLICIES, event_row

NOW = utcnow()
STRICT = load_policies(POLICIES)["gdpr-strict"]  # marketing: opt-in
CCPA = load_policies(POLICIES)["ccpa"]  # marketing: opt-out


def hit(
    site: str, subject: str | None, kind: str = "pageview", days_ago: float = 1, **extra: Any
) -> EventRow:
    return event_row(site, kind, NOW - timedelta(days=days_ago), subject, **extra)


async def chose(
    session: Any, site: str, subject: str, granted: bool, source: str = "banner"
) -> None:
    proof = store.Proof(source=source, ip_prefix=None, ua_family=None, jurisdiction="eu")
    await store.record(
        session,
        site=site,
        subject=subject,
        purposes={"marketing": granted},
        policy=STRICT,
        proof=proof,
        now=NOW - timedelta(minutes=1),
    )


async def test_a_rule_finds_subjects_by_every_condition_it_holds(sessions: Any) -> None:
    site = f"aud-{uuid.uuid4().hex[:8]}"
    async with transaction(sessions) as session:
        session.add(
            Campaign(
                site=site,
                id="spring",
                name="s",
                channel="influencer",
                influencer="ana",
                updated_at=NOW,
            )
        )
        await write_events(
            session,
            [
                hit(site, "a", page="/product/shoe"),
                hit(site, "a", page="/product/hat"),
                hit(site, "b", page="/product/shoe"),
                hit(site, "c", page="/product%_x"),
                hit(site, "c", page="/productX", kind="open"),
                hit(site, "d", page="/product/old", days_ago=40),
                hit(site, "e", "click", 2, campaign="spring", utm_source="ana"),
                hit(site, "e", page="/", days_ago=1.5),  # credited to spring and ana
                hit(site, "f", page="/", utm_source="news", utm_medium="mail"),
                hit(site, None, page="/product/anonymous"),
            ],
        )
    async with sessions() as session:

        async def find(subjects: list[str] | None = None, **rule: Any) -> list[str]:
            return await found_by_rule(session, site, Rule(**rule), 30, NOW, subjects)

        assert await find() == ["a", "b", "c", "e", "f"]
        assert await find(page_prefix="/product/") == ["a", "b"]
        assert await find(page_prefix="/product%_") == ["c"]  # wildcards taken literally
        assert await find(page_prefix="/product/", min_hits=2) == ["a"]
        assert await find(kinds=["open"]) == ["c"]
        assert await find(within_days=60, page_prefix="/product/") == ["a", "b", "d"]
        assert await find(campaign="spring", kinds=["pageview"]) == ["e"]
        assert await find(influencer="ana") == ["e"]
        assert await find(utm={"utm_source": "news", "utm_medium": "mail"}) == ["f"]
        assert await find(["b", "f", "zz"]) == ["b", "f"]


async def test_members_are_those_whose_marketing_is_allowed_now_and_the_rest_say_why(
    sessions: Any, tmp_path: Path
) -> None:
    site = f"aud-{uuid.uuid4().hex[:8]}"
    people = ["granted", "silent", "refused", "opted-out", "gpc", "withdrawn"]
    async with transaction(sessions) as session:
        await write_events(session, [hit(site, person) for person in people])
        await chose(session, site, "granted", True)
        await chose(session, site, "refused", False)
        await chose(session, site, "opted-out", False, OPT_OUT_SOURCE)
        await chose(session, site, "gpc", False, GPC_SOURCE)
        await chose(session, site, "withdrawn", True)
    async with transaction(sessions) as session:
        await store.withdraw(
            session,
            site=site,
            subject="withdrawn",
            policy=STRICT,
            proof=store.Proof("banner", None, None, "eu"),
            now=NOW,
        )
    async with sessions() as session:
        strict = await members(session, site, Rule(), STRICT, "eu", NOW)
        assert msgspec.to_builtins(strict) == {
            "members": ["granted"],
            "excluded": {"no_consent": 3, "gpc": 1, "opt_out": 1},
        }
        # Under an opt-out policy, silence allows marketing; a no does not.
        ccpa = await members(session, site, Rule(), CCPA, "us-ca", NOW)
        assert ccpa.members == ["granted", "silent"]
        one = await members(session, site, Rule(), STRICT, "eu", NOW, ["granted"])
        assert one == Members(["granted"], one.excluded)
        path = tmp_path / "plain.toml"
        path.write_text(
            'name = "plain"\nversion = "1"\n[purposes.analytics]\ndefault = "granted"\n'
            '[kinds]\n"*" = ["analytics"]\n'
        )
        plain = await members(session, site, Rule(), load_policy(path), "eu", NOW)
        assert plain.members == []  # no marketing purpose: nobody may be marketed to
        assert msgspec.to_builtins(plain.excluded) == {"no_consent": 4, "gpc": 1, "opt_out": 1}


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (Rule(page_prefix="/a\x00"), "page_prefix"),
        (Rule(campaign="c\x01"), "campaign"),
        (Rule(influencer="i\n"), "influencer"),
        (Rule(utm={"utm_term": "t\x00"}), "utm.utm_term"),
        (Rule(page_prefix="/fine", utm={"utm_source": "fine"}), None),
    ],
)
def test_a_rule_names_its_first_field_no_column_can_hold(rule: Rule, field: str | None) -> None:
    assert rule.unstorable() == field


def test_a_rule_from_json_is_checked_field_by_field() -> None:
    with pytest.raises(msgspec.ValidationError, match="min_hits"):
        msgspec.convert({"min_hits": 0}, Rule)
    with pytest.raises(msgspec.ValidationError, match="utm"):
        msgspec.convert({"utm": {"utm_colour": "red"}}, Rule)
    with pytest.raises(msgspec.ValidationError, match="kinds"):
        msgspec.convert({"kinds": ["Page View"]}, Rule)
    with pytest.raises(msgspec.ValidationError, match="length <= 50"):
        msgspec.convert({"kinds": [f"k{n}" for n in range(51)]}, Rule)


async def test_a_browser_that_sent_gpc_is_left_out_and_each_is_judged_where_last_seen(
    sessions: Any, policies_copy: Path
) -> None:
    """Under an opt-out policy: Global Privacy Control on any hit in the rule's window is an
    opt-out of marketing; a subject last seen in a jurisdiction with an opt-in default is
    not a member there."""
    site = f"aud-{uuid.uuid4().hex[:8]}"
    sent_gpc = {"analytics": "default:ccpa", GPC_SEEN: "1"}
    async with transaction(sessions) as session:
        await write_events(
            session,
            [
                hit(site, "silent", jurisdiction="us-ca"),
                hit(site, "gpc-once", jurisdiction="us-ca", days_ago=3, basis=sent_gpc),
                hit(site, "gpc-once", jurisdiction="us-ca", days_ago=1),
                hit(site, "gpc-long-ago", jurisdiction="us-ca", days_ago=40, basis=sent_gpc),
                hit(site, "gpc-long-ago", jurisdiction="us-ca", days_ago=1),
                hit(site, "moved", jurisdiction="us-ca", days_ago=3),
                hit(site, "moved", jurisdiction="eu", days_ago=1),
                hit(site, "came-back", jurisdiction="eu", days_ago=3),
                hit(site, "came-back", jurisdiction="us-ca", days_ago=1),
            ],
        )
    text = (POLICIES / "ccpa.toml").read_text().replace('name = "ccpa"', 'name = "ccpa-eu"')
    path = policies_copy / "ccpa-eu.toml"
    path.write_text(text + '\n[jurisdictions.eu]\nmarketing = "denied"\n')
    policy = load_policy(path)
    async with sessions() as session:
        found = await members(session, site, Rule(), policy, "us-ca", NOW)
    assert found.members == ["came-back", "gpc-long-ago", "silent"]
    assert msgspec.to_builtins(found.excluded) == {"no_consent": 1, "gpc": 1, "opt_out": 0}
