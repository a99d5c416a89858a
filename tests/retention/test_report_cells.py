"""The report cells and the `reports` job that keeps them (retention/report_cells.py), on both
databases: which writes mark which days, what a build leaves dirty, erasure and new
influencers. That reports read them right is tested with every report's figures
(tests/app/http/test_report_figures.py)."""

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litestar.testing import TestClient
from pyroaring import BitMap

from app.base.db import make_engine, make_sessionmaker, transaction
from app.base.keys import KeyRing
from app.base.settings import Settings
from consent.policy import load_policies
from retention import report_cells
from retention.dsar import run_dsar
from tests.factories import (
    auth,
    build_report_cells,
    make_key,
    make_site,
    run,
    subject_id,
    table_rows,
)

Client = TestClient[Any]
TODAY = datetime.now(UTC).date()


def at(day: date, hour: int = 12) -> str:
    return datetime.combine(day, time(hour), tzinfo=UTC).isoformat()


def dirty_days(settings: Settings, site: str) -> set[date]:
    return {row["day"] for row in table_rows(settings, "report_dirty", site=site)}


def send(client: Client, site: str, key: str, events: list[dict[str, Any]]) -> None:
    answer = client.post(f"/v1/sites/{site}/events", json={"events": events}, headers=auth(key))
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text


@pytest.fixture
def shop(settings: Settings) -> tuple[str, str, str]:
    """An opt-out site (events recorded without a consent record): ingest and admin keys."""
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    return site, make_key(settings, site, "ingest"), make_key(settings, site)


def test_writes_mark_their_days_and_the_job_builds_the_past_ones(
    client: Client, settings: Settings, shop: tuple[str, str, str]
) -> None:
    site, ingest, _ = shop
    yesterday, before = TODAY - timedelta(days=1), TODAY - timedelta(days=3)
    people = [subject_id() for _ in range(3)]
    send(client, site, ingest, [{"subject": p, "occurred_at": at(yesterday)} for p in people])
    send(client, site, ingest, [{"subject": people[0], "occurred_at": at(before)}])
    assert dirty_days(settings, site) == {yesterday, before}

    dry = build_report_cells(settings, dry_run=True)
    assert dry.days_built >= 2 and dirty_days(settings, site) == {yesterday, before}

    build_report_cells(settings)
    assert dirty_days(settings, site) == set()
    cells = table_rows(settings, "report_cells", site=site, dimension="", grain="d")
    assert {(row["period"], row["hits"]) for row in cells} == {(yesterday, 3), (before, 1)}
    numbers = table_rows(settings, "subject_numbers", site=site)
    keyring = KeyRing(settings.secret_key)
    assert {row["subject"] for row in numbers} == {keyring.pseudonym(site, p) for p in people}
    assert sorted(row["number"] for row in numbers) == [1, 2, 3]

    # Today is written to all day: it stays raw, and dirty, until it is over.
    send(client, site, ingest, [{"subject": people[1], "occurred_at": at(TODAY, 0)}])
    build_report_cells(settings)
    assert dirty_days(settings, site) == {TODAY}
    assert not table_rows(settings, "report_cells", site=site, period=TODAY)
    build_report_cells(settings, now=datetime.now(UTC) + timedelta(days=1))
    assert dirty_days(settings, site) == set()
    assert table_rows(settings, "report_cells", site=site, period=TODAY, dimension="")


def test_a_late_click_marks_the_days_its_visits_may_be_credited_with(
    client: Client, settings: Settings, shop: tuple[str, str, str]
) -> None:
    site, ingest, _ = shop
    long_ago = TODAY - timedelta(days=40)
    send(client, site, ingest, [{"kind": "pageview", "occurred_at": at(long_ago)}])
    click = {"kind": "click", "subject": subject_id(), "campaign": "spring"}
    send(client, site, ingest, [{**click, "occurred_at": at(TODAY - timedelta(days=5))}])
    # ccpa's attribution window is 30 days: the click's day and the days after it, up to today
    expected = {TODAY - timedelta(days=n) for n in range(6)} | {long_ago}
    assert dirty_days(settings, site) == expected


def test_a_write_while_a_day_is_built_leaves_the_day_dirty(
    client: Client, settings: Settings, shop: tuple[str, str, str], monkeypatch: Any
) -> None:
    site, ingest, _ = shop
    yesterday = TODAY - timedelta(days=1)
    send(client, site, ingest, [{"occurred_at": at(yesterday)}])
    build_day = report_cells.build_day

    async def written_meanwhile(session: Any, built: str, day: date, clicks: Any) -> int:
        numbered = await build_day(session, built, day, clicks)
        await report_cells.mark_dirty(session, [(built, day)])  # a new mark
        return numbered

    monkeypatch.setattr(report_cells, "build_day", written_meanwhile)
    build_report_cells(settings)
    assert dirty_days(settings, site) == {yesterday}
    monkeypatch.undo()
    build_report_cells(settings)
    assert dirty_days(settings, site) == set()


def test_an_erasure_forgets_the_subject_s_number_and_builds_their_days_again(
    client: Client, settings: Settings, shop: tuple[str, str, str]
) -> None:
    site, ingest, admin = shop
    yesterday, before = TODAY - timedelta(days=1), TODAY - timedelta(days=2)
    gone, stays = subject_id(), subject_id()
    send(
        client,
        site,
        ingest,
        [
            {"subject": gone, "occurred_at": at(yesterday)},
            {"subject": gone, "occurred_at": at(before)},
            {"subject": stays, "occurred_at": at(yesterday)},
        ],
    )
    build_report_cells(settings)
    assert len(table_rows(settings, "subject_numbers", site=site)) == 2
    body = {"type": "erasure", "subject": gone}
    assert client.post(f"/v1/sites/{site}/dsar", json=body, headers=auth(admin)).is_success

    async def fulfil() -> None:
        engine = make_engine(settings.database_url)
        await run_dsar(
            make_sessionmaker(engine), load_policies(settings.policies_dir), datetime.now(UTC)
        )
        await engine.dispose()

    run(fulfil())
    pseudonym = KeyRing(settings.secret_key).pseudonym(site, gone)
    assert [row["subject"] for row in table_rows(settings, "subject_numbers", site=site)] == [
        KeyRing(settings.secret_key).pseudonym(site, stays)
    ]
    assert pseudonym not in str(table_rows(settings, "subject_numbers"))
    assert dirty_days(settings, site) == {yesterday, before}
    build_report_cells(settings)
    cells = table_rows(settings, "report_cells", site=site, dimension="", grain="d")
    assert [(row["period"], row["hits"]) for row in cells] == [(yesterday, 1)]
    read = make_key(settings, site, "read")
    period = {"from": before.isoformat(), "to": yesterday.isoformat()}
    summary = client.get(f"/v1/sites/{site}/reports/summary", params=period, headers=auth(read))
    assert (summary.json()["hits"], summary.json()["subjects"]) == (1, 1)


def test_naming_a_new_influencer_marks_every_day_of_the_site(
    client: Client, settings: Settings, shop: tuple[str, str, str]
) -> None:
    """A visit's influencer is its utm_source when the site named that influencer."""
    site, ingest, admin = shop
    days = [TODAY - timedelta(days=n) for n in (3, 9)]
    send(client, site, ingest, [{"utm_source": "zoe", "occurred_at": at(day)} for day in days])
    build_report_cells(settings)
    body = {"name": "Zoe's", "channel": "influencer", "influencer": "zoe"}
    put = client.put(f"/v1/sites/{site}/campaigns/zoe", json=body, headers=auth(admin))
    assert put.is_success
    assert dirty_days(settings, site) == set(days)
    build_report_cells(settings)
    cells = table_rows(settings, "report_cells", site=site, dimension="", grain="d")
    assert {row["influencer"] for row in cells} == {"zoe"}
    # The same name again changes nothing; a link naming nobody new neither.
    assert client.put(f"/v1/sites/{site}/campaigns/zoe", json=body, headers=auth(admin)).is_success
    link = {"destination": "https://shop.example/", "influencer": "zoe"}
    assert client.post(f"/v1/sites/{site}/links", json=link, headers=auth(admin)).is_success
    assert dirty_days(settings, site) == set()
    assert client.delete(f"/v1/sites/{site}/campaigns/zoe", headers=auth(admin)).is_success
    assert dirty_days(settings, site) == set()  # the link still names zoe


def test_a_past_month_gets_cells_merged_from_its_days_and_every_day_can_be_marked(
    client: Client, settings: Settings, shop: tuple[str, str, str]
) -> None:
    site, ingest, _ = shop
    last_month = (TODAY.replace(day=1) - timedelta(days=1)).replace(day=1)
    days = [last_month, last_month + timedelta(days=9)]
    people = [subject_id(), subject_id()]
    sale = {"kind": "conversion", "value": "12.50", "currency": "EUR"}
    send(
        client,
        site,
        ingest,
        [
            {**sale, "subject": people[0], "occurred_at": at(days[0])},
            {**sale, "subject": people[0], "occurred_at": at(days[1])},
            {**sale, "subject": people[1], "occurred_at": at(days[1]), "value": "-2.50"},
        ],
    )
    build_report_cells(settings)
    [month] = table_rows(settings, "report_cells", site=site, grain="m", dimension="currency")
    assert (month["period"], month["key"], month["hits"], month["value"]) == (
        last_month,
        "EUR",
        3,
        Decimal("22.5"),
    )
    assert len(BitMap.deserialize(month["members"])) == 2

    async def mark_all() -> None:
        engine = make_engine(settings.database_url)
        async with transaction(make_sessionmaker(engine)) as session:
            await report_cells.mark_site_dirty(session, site)
        await engine.dispose()

    run(mark_all())
    assert dirty_days(settings, site) == set(days)


def test_a_day_built_alone_is_credited_with_the_clicks_of_the_days_before_it(
    client: Client, settings: Settings, shop: tuple[str, str, str]
) -> None:
    site, ingest, _ = shop
    person = subject_id()
    click = {"kind": "click", "subject": person, "campaign": "spring"}
    send(client, site, ingest, [{**click, "occurred_at": at(TODAY - timedelta(days=3))}])
    build_report_cells(settings)
    yesterday = TODAY - timedelta(days=1)
    send(client, site, ingest, [{"subject": person, "occurred_at": at(yesterday)}])
    assert build_report_cells(settings).days_built == 1
    [visit] = table_rows(
        settings, "report_cells", site=site, grain="d", dimension="", kind="pageview"
    )
    assert (visit["period"], visit["campaign"]) == (yesterday, "spring")


def test_the_days_a_write_touches() -> None:
    day = date(2026, 5, 10)
    assert report_cells.days_touched("pageview", day, day + timedelta(days=9), 30) == [day]
    assert report_cells.days_touched("click", day, day, 30) == [day]
    late = report_cells.days_touched("click", day, day + timedelta(days=2), 30)
    assert late == [day, day + timedelta(days=1), day + timedelta(days=2)]
    assert len(report_cells.days_touched("click", day, day + timedelta(days=90), 30)) == 31


def test_a_site_whose_policy_is_gone_is_not_built(
    client: Client, settings: Settings, shop: tuple[str, str, str]
) -> None:
    """Its attribution window is unknown: its days wait, dirty, for the policy to be back."""
    site, ingest, _ = shop
    yesterday = TODAY - timedelta(days=1)
    send(client, site, ingest, [{"occurred_at": at(yesterday)}])

    async def without_policies() -> report_cells.CellCounts:
        engine = make_engine(settings.database_url)
        try:
            return await report_cells.build_cells(make_sessionmaker(engine), {}, datetime.now(UTC))
        finally:
            await engine.dispose()

    assert run(without_policies()).days_built == 0
    assert dirty_days(settings, site) == {yesterday}
