"""Retention with an injected clock, on SQLite and PostgreSQL: rows one second either side of
each cutoff, rollups equal to the raw counts they replace, reports unchanged across a purge."""

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.sketches import Union
from app.base.tables import DsarExport, EventId
from app.hits.event import EventRow
from app.hits.writer import write_events
from app.main import create_app
from app.reports import traffic
from app.reports.cells import Scope
from consent import store
from consent.policy import load_policies
from consent.tables import ConsentChange
from retention import jobs
from retention.jobs import cutoff, ensure_partitions, expire_consents, partitions, purge_events
from tests.factories import (
    POLICIES,
    auth,
    make_key,
    make_site,
    run,
    settings_for,
    table_rows,
)
from tests.factories import event_row as event

POLICY_SET = load_policies(POLICIES)
STRICT = POLICY_SET["gdpr-strict"]  # pageview: analytics, 395 days; open: email, 180 days
CCPA = POLICY_SET["ccpa"]  # conversion: analytics (395) and marketing (365): kept 395 days


class World:
    """One database, its sessions, and the clock the jobs run at."""

    def __init__(self, url: str, now: datetime) -> None:
        self.url, self.now = url, now

    async def __aenter__(self) -> "World":
        self.engine = make_engine(self.url)
        self.sessions = make_sessionmaker(self.engine)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.engine.dispose()

    async def add(self, *rows: EventRow) -> None:
        async with transaction(self.sessions) as session:
            await write_events(session, rows)

    async def purge(self, dry_run: bool = False) -> jobs.EventCounts:
        return await purge_events(self.engine, self.sessions, POLICY_SET, self.now, dry_run)

    async def summary(self, site: str, first: date, last: date, **filters: Any) -> Any:
        """The summary's figures, which a purge must not change (it only makes the distinct
        count an estimate, which it says)."""
        async with self.sessions() as session:
            found = await traffic.summary(session, Scope(site, first, last, **filters))
        return msgspec.structs.replace(found, subjects_estimated=False)


NOW = utcnow()
ONE = timedelta(seconds=1)


def test_events_one_second_past_their_cutoff_go_and_one_second_before_stay(
    database_url: str,
) -> None:
    site = make_site(settings_for(database_url))
    views, opens = cutoff(NOW, 395), cutoff(NOW, 180)

    async def scenario() -> tuple[Any, Any, Any, Any, Any]:
        async with World(database_url, NOW) as world:
            await world.add(
                event(site, "pageview", views - ONE, "p-1"),
                event(site, "pageview", views - ONE, "p-2", campaign="spring"),
                event(site, "pageview", views - ONE, "p-2", page="/other"),
                event(site, "pageview", views + ONE),
                event(site, "open", opens - ONE, campaign="nl-1"),
                event(site, "open", opens + ONE, campaign="nl-1"),
            )
            period = (views.date() - timedelta(days=1), NOW.date())
            before = await world.summary(site, *period)
            dry = await world.purge(dry_run=True)
            first = await world.purge()
            second = await world.purge()
            after = await world.summary(site, *period)
            return before, dry, first, second, after

    before, dry, first, second, after = run(scenario())
    left = table_rows(settings_for(database_url), "events", site=site)
    assert sorted(
        (e["kind"], e["occurred_at"].replace(tzinfo=None) > views.replace(tzinfo=None))
        for e in left
    ) == [
        ("open", True),
        ("pageview", True),
    ]
    assert dry.events_deleted == 4 and dry.events_rolled_up == 4
    assert first.events_deleted >= 4 and first.events_rolled_up == 4 and first.days_rolled_up == 2
    assert (second.events_deleted, second.events_rolled_up, second.days_rolled_up) == (0, 0, 0)
    assert before == after
    assert before.hits == 6 and before.by_kind == {"open": 2, "pageview": 4}
    daily = table_rows(settings_for(database_url), "rollup_daily", site=site)
    by_key = {(r["kind"], r["campaign"]): (r["hits"], r["subjects"]) for r in daily}
    assert by_key == {
        ("pageview", ""): (2, 2),
        ("pageview", "spring"): (1, 1),
        ("open", "nl-1"): (1, 1),
    }
    detail = table_rows(settings_for(database_url), "rollup_detail", site=site)
    assert sum(r["hits"] for r in detail) == 4 and all(r["subjects"] <= r["hits"] for r in detail)


def test_an_event_kept_for_several_purposes_is_kept_for_the_longest(database_url: str) -> None:
    site = make_site(settings_for(database_url), policy="ccpa")
    marketing_cutoff = cutoff(NOW, 365)

    async def scenario() -> Any:
        async with World(database_url, NOW) as world:
            await world.add(event(site, "conversion", marketing_cutoff - ONE))
            return await world.purge()

    run(scenario())
    assert len(table_rows(settings_for(database_url), "events", site=site)) == 1
    assert CCPA.retention_days("conversion") == 395 and STRICT.retention_days("open") == 180


def test_a_dry_run_changes_nothing(database_url: str) -> None:
    site = make_site(settings_for(database_url))

    async def scenario() -> Any:
        async with World(database_url, NOW) as world:
            await world.add(event(site, "pageview", cutoff(NOW, 395) - ONE))
            return await world.purge(dry_run=True)

    counts = run(scenario())
    assert counts.events_deleted == 1
    assert len(table_rows(settings_for(database_url), "events", site=site)) == 1
    assert table_rows(settings_for(database_url), "rollup_daily", site=site) == []


def test_deletes_go_in_batches(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(settings_for(database_url))
    monkeypatch.setattr(jobs, "BATCH", 3)
    batches: list[int] = []

    async def scenario() -> Any:
        async with World(database_url, NOW) as world:
            old = cutoff(NOW, 395) - timedelta(days=2)
            await world.add(*(event(site, "pageview", old, f"p-{n}") for n in range(8)))
            return await purge_events(
                world.engine, world.sessions, POLICY_SET, NOW, progress=batches.append
            )

    counts = run(scenario())
    assert counts.events_deleted >= 8 and sum(batches) >= 8
    assert max(batches) == 3 and len(batches) >= 3  # never more than a batch at a time
    assert table_rows(settings_for(database_url), "events", site=site) == []


def test_whole_expired_months_are_dropped_on_postgresql(postgresql_url: str) -> None:
    site = make_site(settings_for(postgresql_url))
    back_then = NOW - timedelta(days=500)  # as if the server had been running for a while

    async def scenario() -> tuple[int, Any, list[str]]:
        async with World(postgresql_url, NOW) as world:
            created = await ensure_partitions(world.engine, POLICY_SET, back_then)
            await ensure_partitions(world.engine, POLICY_SET, NOW)
            old = datetime(back_then.year, back_then.month, 15, tzinfo=back_then.tzinfo)
            await world.add(*(event(site, "pageview", old, f"p-{n}") for n in range(5)))
            await world.add(event(site, "pageview", NOW))
            before = await world.summary(site, old.date(), NOW.date())
            counts = await world.purge()
            assert await world.summary(site, old.date(), NOW.date()) == before
            async with world.engine.connect() as connection:
                names = await partitions(connection)
            return created, counts, names

    created, counts, names = run(scenario())
    assert created > 0 and counts.partitions_dropped >= 1
    assert f"events_{NOW:%Y_%m}" in names and "events_default" in names
    assert len(table_rows(settings_for(postgresql_url), "events", site=site)) == 1


def test_lapsed_consents_are_marked_and_old_withdrawals_purged(database_url: str) -> None:
    site = make_site(settings_for(database_url))
    proof = store.Proof("test", None, None, "eu")

    async def scenario() -> tuple[Any, Any]:
        async with World(database_url, NOW) as world:
            async with transaction(world.sessions) as session:
                long_ago = NOW - timedelta(days=400)
                await store.record(
                    session,
                    site=site,
                    subject="lapsed",
                    purposes={"analytics": True},
                    policy=STRICT,
                    proof=proof,
                    now=long_ago,
                )
                await store.record(
                    session,
                    site=site,
                    subject="fresh",
                    purposes={"analytics": True},
                    policy=STRICT,
                    proof=proof,
                    now=NOW,
                )
                gone = NOW - timedelta(days=STRICT.file.consent_proof_days + 1)
                await store.record(
                    session,
                    site=site,
                    subject="left",
                    purposes={"analytics": True},
                    policy=STRICT,
                    proof=proof,
                    now=gone - timedelta(days=1),
                )
                await store.withdraw(
                    session, site=site, subject="left", policy=STRICT, proof=proof, now=gone
                )
                # a site pixelgate no longer knows: its proof period is unknown, so it stays
                await store.withdraw(
                    session, site="ghost-site", subject="left", policy=STRICT, proof=proof, now=gone
                )
                recent = NOW - timedelta(days=10)
                await store.withdraw(
                    session, site=site, subject="recent", policy=STRICT, proof=proof, now=recent
                )
            dry = await expire_consents(world.sessions, POLICY_SET, NOW, dry_run=True)
            first = await expire_consents(world.sessions, POLICY_SET, NOW)
            second = await expire_consents(world.sessions, POLICY_SET, NOW)
            return (dry, first), second

    (dry, first), second = run(scenario())
    assert dry.consents_expired >= 1 and dry.ledger_entries_purged >= 2
    assert first.consents_expired >= 1 and first.ledger_entries_purged >= 2
    assert (second.consents_expired, second.ledger_entries_purged) == (0, 0)
    ledger = {
        r["subject"] for r in table_rows(settings_for(database_url), "consent_ledger", site=site)
    }
    assert ledger == {"lapsed", "fresh", "recent"}
    ghost = table_rows(settings_for(database_url), "consent_ledger", site="ghost-site")
    assert len(ghost) >= 1
    states = {
        r["subject"]: r
        for r in table_rows(
            settings_for(database_url), "consent_state", site=site, purpose="analytics"
        )
    }
    assert states["lapsed"]["expired_at"] is not None and states["fresh"]["expired_at"] is None
    assert states["left"]["granted"] is False  # the withdrawal itself still stands


def test_consent_change_announcements_are_purged_after_a_day_by_the_real_clock(
    database_url: str,
) -> None:
    """Servers read them within a batch; a run `--as-of` a later day still keeps the recent
    ones, which a server may not have read yet."""
    site = f"changes-{uuid.uuid4().hex[:8]}"
    real = utcnow()

    async def scenario() -> tuple[Any, Any]:
        async with World(database_url, NOW) as world:
            async with transaction(world.sessions) as session:
                for subject, age in (("old", timedelta(days=1, seconds=1)), ("new", ONE)):
                    session.add(ConsentChange(site=site, subject=subject, changed_at=real - age))
            later = real + timedelta(days=10)
            dry = await expire_consents(world.sessions, POLICY_SET, later, dry_run=True)
            done = await expire_consents(world.sessions, POLICY_SET, later)
            return dry, done

    dry, done = run(scenario())
    assert dry.changes_purged >= 1 and done.changes_purged == dry.changes_purged
    left = table_rows(settings_for(database_url), "consent_changes", site=site)
    assert [r["subject"] for r in left] == ["new"]


def test_expired_exports_are_deleted(database_url: str) -> None:
    site = make_site(settings_for(database_url))

    async def scenario() -> Any:
        async with World(database_url, NOW) as world:
            async with transaction(world.sessions) as session:
                for days in (-1, 1):
                    session.add(
                        DsarExport(
                            site=site,
                            request_id=uuid.uuid4(),
                            subject_hash="h",
                            document=b"{}",
                            expires_at=NOW + timedelta(days=days),
                        )
                    )
            return await world.purge()

    counts = run(scenario())
    assert counts.exports_deleted >= 1
    assert len(table_rows(settings_for(database_url), "dsar_exports", site=site)) == 1


def test_the_summary_report_over_http(database_url: str) -> None:
    settings = settings_for(database_url)
    site = make_site(settings)
    reader = auth(make_key(settings, site, "read"))

    async def seed() -> None:
        async with World(database_url, NOW) as world:
            await world.add(
                event(site, "pageview", NOW, campaign="c1"), event(site, "click", NOW, "p-2")
            )

    run(seed())
    with TestClient(create_app(settings)) as client:
        url = f"/v1/sites/{site}/reports/summary"
        day = NOW.date().isoformat()
        body = client.get(url, params={"from": day, "to": day}, headers=reader).json()
        assert body == {
            "hits": 2,
            "subjects": 2,
            "subjects_estimated": False,
            "anonymous_hits": 0,
            "by_kind": {"click": 1, "pageview": 1},
            "conversions": 0,
            "revenue": {},
            "suppressed": False,
        }
        filtered = client.get(
            url, params={"from": day, "to": day, "campaign": "c1"}, headers=reader
        )
        assert filtered.json()["hits"] == 1
        by_kind = client.get(url, params={"from": day, "to": day, "kind": "click"}, headers=reader)
        assert by_kind.json()["by_kind"] == {"click": 1}
        as_csv = client.get(
            url, params={"from": day, "to": day}, headers={**reader, "Accept": "text/csv"}
        )
        assert as_csv.headers["content-type"].startswith("text/csv") and "hits,,2" in as_csv.text
        bad = client.get(url, params={"from": day, "to": "yesterday"}, headers=reader)
        assert bad.status_code == 422
        backwards = client.get(url, params={"from": day, "to": "2000-01-01"}, headers=reader)
        assert backwards.status_code == 422
        assert client.get(url, params={"from": day, "to": day}).status_code == 401


def test_a_month_whose_rows_already_sit_in_the_default_partition_is_left_there(
    postgresql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    site = make_site(settings_for(postgresql_url))
    far = datetime(2999, 1, 15, tzinfo=NOW.tzinfo)

    async def scenario() -> int:
        async with World(postgresql_url, NOW) as world:
            await world.add(event(site, "pageview", far))  # no partition yet: the default one
            return await ensure_partitions(
                world.engine, POLICY_SET, datetime(2998, 12, 1, tzinfo=NOW.tzinfo)
            )

    run(scenario())
    assert "events_2999_01 not created" in caplog.text
    assert len(table_rows(settings_for(postgresql_url), "events", site=site)) == 1


def test_a_run_cut_short_after_its_rollup_does_not_count_twice(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(settings_for(database_url))
    old = cutoff(NOW, 395) - timedelta(days=3)

    async def crash(*_: object) -> int:
        raise ConnectionError("the database went away between rollup and delete")

    async def scenario() -> tuple[Any, Any]:
        async with World(database_url, NOW) as world:
            await world.add(*(event(site, "pageview", old, f"p-{n}") for n in range(4)))
            before = await world.summary(site, old.date(), NOW.date())
            with monkeypatch.context() as patch:
                patch.setattr(jobs, "_delete_expired", crash)
                with pytest.raises(ConnectionError):
                    await world.purge()
            await world.purge()
            return before, await world.summary(site, old.date(), NOW.date())

    before, after = run(scenario())
    assert before == after and after.hits == 4
    assert table_rows(settings_for(database_url), "events", site=site) == []
    [daily] = table_rows(settings_for(database_url), "rollup_daily", site=site)
    assert daily["hits"] == 4


def test_event_ids_a_week_old_are_forgotten_and_younger_ones_kept(database_url: str) -> None:
    site = make_site(settings_for(database_url))
    before = cutoff(NOW, jobs.EVENT_ID_DAYS)

    async def scenario() -> tuple[jobs.EventCounts, jobs.EventCounts, jobs.EventCounts]:
        async with World(database_url, NOW) as world:
            async with transaction(world.sessions) as session:
                for name, seen in (("old", before - ONE), ("young", before + ONE)):
                    session.add(EventId(site=site, id_hash=name, seen_at=seen))
            return await world.purge(dry_run=True), await world.purge(), await world.purge()

    dry, first, second = run(scenario())
    assert (dry.event_ids_deleted, first.event_ids_deleted, second.event_ids_deleted) == (1, 1, 0)
    [kept] = table_rows(settings_for(database_url), "event_ids", site=site)
    assert kept["id_hash"] == "young"
    assert before <= NOW - timedelta(days=7)


def test_a_rollup_keeps_each_hours_anonymous_hits_values_and_a_sketch_of_its_subjects(
    database_url: str,
) -> None:
    site = make_site(settings_for(database_url), policy="ccpa")
    old = cutoff(NOW, 395) - timedelta(days=2) + timedelta(hours=7)
    paid = {"kind": "conversion", "currency": "EUR"}

    async def scenario() -> None:
        async with World(database_url, NOW) as world:
            await world.add(
                event(site, "conversion", old, "p-1", value=Decimal("10.5"), currency="EUR"),
                event(site, "conversion", old, "p-2", value=Decimal("-2.5"), currency="EUR"),
                event(site, "conversion", old, None, value=None, currency="EUR"),
                event(site, "conversion", old + timedelta(hours=1), "p-1", currency="EUR"),
            )
            await world.purge()

    run(scenario())
    rows = table_rows(settings_for(database_url), "rollup_detail", site=site, **paid)
    by_hour = {row["hour"]: row for row in rows}
    assert sorted(by_hour) == [7, 8]
    seven = by_hour[7]
    assert (seven["hits"], seven["anonymous_hits"], seven["subjects"]) == (3, 1, 2)
    assert Decimal(seven["value"]) == Decimal("8.0") and by_hour[8]["value"] is None
    union = Union()
    for row in rows:
        union.add_sketch(row["sketch"])
    assert union.estimate() == 2  # p-1 in both hours, counted once
