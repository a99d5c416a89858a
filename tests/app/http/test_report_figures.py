"""Every report's figures, computed here independently from the hits the test sends through
the events API, on both databases: live events, the same days from the report cells the
`reports` job builds (alone and mixed with later raw events), whole months' cells, purged days
read from rollups, k-anonymity."""

import asyncio
import csv
import io
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from app.base.db import make_engine, make_sessionmaker
from app.base.keys import KeyRing
from app.base.settings import Settings
from app.main import create_app
from consent.policy import load_policies
from retention.jobs import purge_events
from tests.factories import (
    GMAIL_PROXY,
    auth,
    build_report_cells,
    delete_rows,
    make_key,
    make_site,
    settings_for,
    subject_id,
    table_rows,
)

Client = TestClient[Any]
Hit = dict[str, Any]
TODAY = datetime.now(UTC).date()
PAGES = ["/", "/shoes", "/hats"]
SOURCES = [None, "insta", "news"]


def hits_over(
    days: list[date], count: int, seed: int, people: list[str] | None = None
) -> list[Hit]:
    """Random hits on those days: kinds, subjects (seven new people unless given; an eighth of
    the hits anonymous), pages, sources and conversions with values, refunds among them."""
    rng = random.Random(seed)
    people = people or [subject_id() for _ in range(7)]
    sent = []
    for _ in range(count):
        moment = datetime.combine(rng.choice(days), time(rng.randrange(24), rng.randrange(60)))
        hit: Hit = {
            "kind": rng.choice(["pageview"] * 4 + ["click", "conversion"]),
            "page": rng.choice(PAGES),
            "occurred_at": moment.replace(tzinfo=UTC).isoformat(),
        }
        if (person := rng.choice([*people, None])) is not None:
            hit["subject"] = person
        if (source := rng.choice(SOURCES)) is not None:
            hit["utm_source"] = source
        if hit["kind"] == "conversion" and rng.random() < 0.8:
            hit["value"] = rng.choice(["19.90", "5", "-4.95"])
            hit["currency"] = rng.choice(["EUR", "EUR", "USD"])
        sent.append(hit)
    return sent


def purge(settings: Settings) -> None:
    """Retention's run of today, as the scheduler would start it."""

    async def work() -> None:
        engine = make_engine(settings.database_url)
        policies = load_policies(settings.policies_dir)
        await purge_events(engine, make_sessionmaker(engine), policies, datetime.now(UTC))
        await engine.dispose()

    asyncio.run(work())


def send(client: Client, site: str, key: str, hits: list[Hit]) -> None:
    for start in range(0, len(hits), 1000):
        batch = hits[start : start + 1000]
        answer = client.post(f"/v1/sites/{site}/events", json={"events": batch}, headers=auth(key))
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == len(batch), answer.text


def day_of(hit: Hit) -> date:
    return datetime.fromisoformat(hit["occurred_at"]).date()


def figures(hits: list[Hit]) -> tuple[int, int]:
    return len(hits), len({hit["subject"] for hit in hits if "subject" in hit})


def expected_summary(hits: list[Hit]) -> dict[str, Any]:
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for hit in hits:
        if hit["kind"] == "conversion" and "value" in hit:
            revenue[hit["currency"]] += Decimal(hit["value"])
    total, subjects = figures(hits)
    return {
        "hits": total,
        "subjects": subjects,
        "anonymous_hits": sum("subject" not in hit for hit in hits),
        "by_kind": dict(sorted(Counter(hit["kind"] for hit in hits).items())),
        "conversions": sum(hit["kind"] == "conversion" for hit in hits),
        "revenue": {c: f"{v:.2f}" for c, v in sorted(revenue.items())},
        "suppressed": False,
    }


def grouped(hits: list[Hit], key: Any) -> dict[Any, tuple[int, int]]:
    groups: dict[Any, list[Hit]] = defaultdict(list)
    for hit in hits:
        groups[key(hit)].append(hit)
    return {name: figures(group) for name, group in groups.items()}


def report(client: Client, site: str, key: str, name: str, **query: Any) -> Any:
    answer = client.get(f"/v1/sites/{site}/reports/{name}", params=query, headers=auth(key))
    assert answer.status_code == 200, answer.text
    return answer.json()


def rows_of(body: dict[str, Any]) -> dict[Any, tuple[int, int]]:
    return {row["key"]: (row["hits"], row["subjects"]) for row in body["rows"]}


def opt_out_site(database_url: str, policies_copy: Path) -> tuple[Settings, str]:
    """A site under ccpa with e-mail opens opt-out too: the hits are dated before any consent
    could be. Opens are kept 180 days, the other kinds 395."""
    text = (policies_copy / "ccpa.toml").read_text()
    opt_out = text.replace('name = "ccpa"', 'name = "ccpa-open"')
    opt_out = opt_out.replace(
        '[purposes.email]\ndefault = "denied"', '[purposes.email]\ndefault = "granted"'
    )
    assert opt_out.count("granted") == text.count("granted") + 1
    (policies_copy / "ccpa-open.toml").write_text(opt_out)
    settings = settings_for(database_url, policies_dir=policies_copy)
    return settings, make_site(settings, policy="ccpa-open", jurisdiction="us-ca")


@pytest.fixture
def shop(client: Client, settings: Settings) -> tuple[str, str, str]:
    """A site under the opt-out policy (events recorded without a consent record), with an
    ingest key and a read key."""
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    return site, make_key(settings, site, "ingest"), make_key(settings, site, "read")


@pytest.mark.parametrize(
    "cells", ["raw", "built", "built-then-more"], ids=["raw", "cells", "cells-and-raw"]
)
def test_summary_breakdown_and_timeseries_agree_with_the_hits_sent(
    client: Client, shop: tuple[str, str, str], settings: Settings, cells: str
) -> None:
    """Over 70 days, so over at least one whole month: raw events; the report cells of every
    day and month; those cells with more hits sent since on some of the days."""
    site, ingest, read = shop
    days = [TODAY - timedelta(days=n) for n in range(1, 71)]
    hits = hits_over(days, 400, seed=1)
    send(client, site, ingest, hits)
    if cells != "raw":
        build_report_cells(settings)
        hit_days = {day_of(hit) for hit in hits}
        past_months = {day.replace(day=1) for day in hit_days if day.month != TODAY.month}
        built = table_rows(settings, "report_cells", site=site, dimension="")
        assert {row["period"] for row in built if row["grain"] == "d"} == hit_days
        assert {row["period"] for row in built if row["grain"] == "m"} == past_months
        # Left dirty: today (a late click marks its window up to today), until it is over.
        assert {row["day"] for row in table_rows(settings, "report_dirty", site=site)} <= {TODAY}
    if cells == "built":  # the reports read the cells, not the events: gone, nothing changes
        delete_rows(settings, "events", site=site)
    if cells == "built-then-more":  # the same people on a few of the days: raw again
        people = sorted({hit["subject"] for hit in hits if "subject" in hit})
        more = hits_over(days[:3] + days[-3:], 60, seed=11, people=people)
        send(client, site, ingest, more)
        hits += more
    period = {"from": min(days).isoformat(), "to": max(days).isoformat()}

    summary = report(client, site, read, "summary", **period)
    assert summary == {**expected_summary(hits), "subjects_estimated": False}
    pages = report(client, site, read, "breakdown", by="page", limit=10, **period)
    assert rows_of(pages) == grouped(hits, lambda hit: hit["page"])
    assert pages["other"] == {"hits": 0, "subjects": 0, "subjects_estimated": False}
    sources = report(client, site, read, "breakdown", by="utm_source", limit=2, **period)
    by_source = grouped(hits, lambda hit: hit.get("utm_source"))
    assert [row["hits"] for row in sources["rows"]] == sorted(
        (hits for hits, _ in by_source.values()), reverse=True
    )[:2]
    shown = {row["key"] for row in sources["rows"]}
    rest = [hit for hit in hits if hit.get("utm_source") not in shown]
    other = sources["other"]
    assert (other["hits"], other["subjects"]) == figures(rest)
    daily = report(client, site, read, "timeseries", interval="day", **period)
    per_day = grouped(hits, day_of)
    assert [(p["t"], p["hits"], p["subjects"]) for p in daily["points"]] == [
        (day.isoformat(), *per_day.get(day, (0, 0))) for day in sorted(days)
    ]
    hourly = report(client, site, read, "timeseries", interval="hour", **period)
    assert len(hourly["points"]) == 24 * len(days)
    assert sum(p["hits"] for p in hourly["points"]) == len(hits)
    monthly = report(client, site, read, "timeseries", interval="month", **period)
    per_month = grouped(hits, lambda hit: day_of(hit).replace(day=1))
    assert {p["t"]: (p["hits"], p["subjects"]) for p in monthly["points"]} == {
        month.isoformat(): figures for month, figures in per_month.items()
    }
    weekly = report(client, site, read, "timeseries", interval="week", **period)
    per_week = grouped(hits, lambda hit: day_of(hit) - timedelta(days=day_of(hit).weekday()))
    assert {p["t"]: (p["hits"], p["subjects"]) for p in weekly["points"] if p["hits"]} == {
        week.isoformat(): figures for week, figures in per_week.items()
    }

    clicks = report(client, site, read, "summary", kind="click", **period)
    assert clicks["hits"] == clicks["by_kind"]["click"] == sum(h["kind"] == "click" for h in hits)
    as_csv = client.get(
        f"/v1/sites/{site}/reports/breakdown",
        params={"by": "page", **period},
        headers={**auth(read), "Accept": "text/csv"},
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(as_csv.text)))
    assert table[0] == ["page", "hits", "subjects", "subjects_estimated"]
    assert {row[0]: (int(row[1]), int(row[2])) for row in table[1:-1]} == rows_of(pages)
    assert table[-1] == ["(other)", "0", "0", "false"]


@pytest.mark.parametrize("built", [False, True], ids=["raw", "cells"])
def test_purged_days_are_read_from_rollups_and_their_distinct_counts_are_estimates(
    client: Client, shop: tuple[str, str, str], settings: Settings, built: bool
) -> None:
    """Recent days raw or from their report cells; the purge deletes the cells of the days it
    rolls up, and the numbers of the subjects it leaves no raw event of."""
    site, ingest, read = shop
    old = [TODAY - timedelta(days=n) for n in range(400, 404)]  # past every ccpa retention
    recent = [TODAY - timedelta(days=n) for n in range(1, 4)]
    hits = hits_over(old + recent, 240, seed=2)
    send(client, site, ingest, hits)
    if built:
        build_report_cells(settings)
    period = {"from": min(old).isoformat(), "to": max(recent).isoformat()}
    old_period = {"from": min(old).isoformat(), "to": max(old).isoformat()}
    before = report(client, site, read, "summary", **period)
    pages_before = report(client, site, read, "breakdown", by="page", **old_period)

    purge(settings)
    if built:
        cells = table_rows(settings, "report_cells", site=site)
        assert [row for row in cells if row["period"] <= max(old)] == []
    # The rollups' sketches hold subject numbers; the purge forgot the numbers of every subject
    # it left no raw event of (numbered by the cells' build, or by the rollup itself).
    subjects_of = {
        when: {hit["subject"] for hit in hits if "subject" in hit and day_of(hit) in days}
        for when, days in (("old", old), ("recent", recent))
    }
    kept = subjects_of["recent"] if built else subjects_of["old"] & subjects_of["recent"]
    numbered = table_rows(settings, "subject_numbers", site=site)
    keyring = KeyRing(settings.secret_key)
    assert {row["subject"] for row in numbered} == {keyring.pseudonym(site, s) for s in kept}
    after = report(client, site, read, "summary", **period)
    # Small sets are counted exactly by the sketches, but said to be estimates all the same.
    assert (
        after
        == {**before, "subjects_estimated": True}
        == {
            **expected_summary(hits),
            "subjects_estimated": True,
        }
    )
    pages = report(client, site, read, "breakdown", by="page", **old_period)
    assert rows_of(pages) == rows_of(pages_before)
    assert all(row["subjects_estimated"] for row in pages["rows"])
    daily = report(client, site, read, "timeseries", interval="day", **period)
    per_day = grouped(hits, day_of)
    for point in daily["points"]:
        day = date.fromisoformat(point["t"])
        assert (point["hits"], point["subjects"]) == per_day.get(day, (0, 0)), day
        assert point["subjects_estimated"] == (day in old)
    hourly = report(client, site, read, "timeseries", interval="hour", **old_period)
    per_hour = grouped(hits, lambda hit: hit["occurred_at"][:13])
    for point in hourly["points"]:
        assert (point["hits"], point["subjects"]) == per_hour.get(point["t"][:13], (0, 0))


@pytest.mark.parametrize("built", [False, True], ids=["raw", "cells"])
def test_days_with_one_kind_purged_count_the_others_from_their_cells(
    database_url: str, policies_copy: Path, built: bool
) -> None:
    """Opens are kept 180 days, the other kinds 395: on days between, a breakdown by page
    takes the opens from the rollups and the other kinds from their own cells, not from the
    cells of every kind together, which held the opens too."""
    settings, site = opt_out_site(database_url, policies_copy)
    ingest, read = make_key(settings, site, "ingest"), make_key(settings, site, "read")
    with TestClient(create_app(settings)) as client:
        one_kind_purged(client, settings, (site, ingest, read), built)


def one_kind_purged(
    client: Client, settings: Settings, shop: tuple[str, str, str], built: bool
) -> None:
    site, ingest, read = shop
    old = [TODAY - timedelta(days=n) for n in range(200, 204)]
    recent = [TODAY - timedelta(days=n) for n in range(1, 4)]
    hits = hits_over(old + recent, 240, seed=5)
    for hit in hits[::5]:
        if day_of(hit) in old and "subject" in hit:
            hit["kind"] = "open"
            hit.pop("value", None)
            hit.pop("currency", None)
    send(client, site, ingest, hits)
    if built:
        build_report_cells(settings)
    period = {"from": min(old).isoformat(), "to": max(recent).isoformat()}
    purge(settings)
    if built:
        old_cells = [
            row
            for row in table_rows(settings, "report_cells", site=site)
            if row["period"] <= max(old)
        ]
        assert {row["kind"] for row in old_cells} == {"pageview", "click", "conversion"}
        delete_rows(settings, "events", site=site)  # so that the cells are what is read
    pages = report(client, site, read, "breakdown", by="page", **period)
    assert rows_of(pages) == grouped(hits, lambda hit: hit["page"])
    assert all(row["subjects_estimated"] for row in pages["rows"])
    clicks = report(client, site, read, "breakdown", by="page", kind="click", **period)
    assert rows_of(clicks) == grouped(
        [h for h in hits if h["kind"] == "click"], lambda h: h["page"]
    )
    assert not any(row["subjects_estimated"] for row in clicks["rows"])


@pytest.mark.parametrize("built", [False, True], ids=["raw", "cells"])
def test_cells_of_fewer_subjects_than_the_policy_asks_fold_into_other(
    database_url: str, policies_copy: Path, built: bool
) -> None:
    text = (policies_copy / "ccpa.toml").read_text()
    kept = text.replace('name = "ccpa"', 'name = "ccpa-k3"').replace(
        "min_subjects = 1", "min_subjects = 3"
    )
    assert kept != text
    (policies_copy / "ccpa-k3.toml").write_text(kept)
    settings = settings_for(database_url, policies_dir=policies_copy)
    site = make_site(settings, policy="ccpa-k3", jurisdiction="us-ca")
    ingest, read = make_key(settings, site, "ingest"), make_key(settings, site, "read")
    day = (TODAY - timedelta(days=1)).isoformat()
    crowd, loner = [subject_id() for _ in range(3)], subject_id()
    at = f"{day}T10:00:00+00:00"
    hits = [
        {
            "page": "/popular",
            "subject": s,
            "occurred_at": at,
            "utm_source": "ana",
            "campaign": "ana",
        }
        for s in crowd
    ]
    rare = {
        "kind": "conversion",
        "page": "/rare",
        "subject": loner,
        "occurred_at": at,
        "utm_source": "zed",
    }
    hits += [{**rare, "campaign": "zed"}] * 2
    hits += [{"page": "/anonymous", "occurred_at": at}]
    admin = auth(make_key(settings, site))
    with TestClient(create_app(settings)) as client:
        for name in ("ana", "zed"):
            body = {"name": name, "channel": "influencer", "influencer": name}
            client.put(f"/v1/sites/{site}/campaigns/{name}", json=body, headers=admin)
        send(client, site, ingest, hits)
        if built:
            build_report_cells(settings)
        influencers = report(client, site, read, "influencers", **{"from": day, "to": day})
        assert [row["influencer"] for row in influencers["rows"]] == ["ana"]
        other = influencers["other"]
        assert (other["influencer"], other["visits"], other["conversions"]) == ("(other)", 0, 2)
        pages = report(client, site, read, "breakdown", by="page", **{"from": day, "to": day})
        assert rows_of(pages) == {"/popular": (3, 3), "/anonymous": (1, 0)}
        assert pages["other"] == {"hits": 2, "subjects": 1, "subjects_estimated": False}
        as_csv = client.get(
            f"/v1/sites/{site}/reports/breakdown",
            params={"by": "page", "from": day, "to": day},
            headers={**auth(read), "Accept": "text/csv"},
        )
        assert "/rare" not in as_csv.text and as_csv.text.splitlines()[-1] == "(other),2,1,false"
        # What a breakdown folds, a filtered summary or a campaign report does not show.
        period = {"from": day, "to": day}
        whole = report(client, site, read, "summary", **period)
        assert (whole["hits"], whole["subjects"], whole["suppressed"]) == (6, 4, False)
        alone = report(client, site, read, "summary", influencer="zed", **period)
        assert alone == {
            "hits": 0,
            "subjects": 0,
            "subjects_estimated": False,
            "anonymous_hits": 0,
            "by_kind": {},
            "conversions": 0,
            "revenue": {},
            "suppressed": True,
        }
        campaign = report(client, site, read, "campaigns/zed", **period)
        assert campaign["suppressed"] is True and campaign["conversions"] == 0
        assert report(client, site, read, "campaigns/ana", **period)["suppressed"] is False


# Attribution: a model of SPEC §4.8's last touch, written here from the hits sent.
KNOWN = ("ana", "bob")  # the influencers the site names on its campaigns
WINDOW = timedelta(days=30)  # the shipped policies' attribution_window_days


def marketing_hits(days: list[date], people: list[str], count: int, seed: int) -> list[Hit]:
    """Clicks of two campaigns' links, visits and conversions after them (some carrying
    their own campaign or source), e-mail opens of people and of an image proxy."""
    rng = random.Random(seed)
    sent = []
    for _ in range(count):
        moment = datetime.combine(rng.choice(days), time(rng.randrange(24), rng.randrange(60)))
        kind = rng.choice(["click", "click", "pageview", "pageview", "conversion", "open"])
        hit: Hit = {"kind": kind, "occurred_at": moment.replace(tzinfo=UTC).isoformat()}
        if (person := rng.choice([*people, None])) is not None:
            hit["subject"] = person
        if kind == "click":
            hit["campaign"], hit["utm_source"] = rng.choice([("spring", "ana"), ("summer", "bob")])
        elif kind == "open":
            hit["campaign"], hit["subject"] = "letter", rng.choice(people)
            if rng.random() < 0.25:
                hit["user_agent"] = GMAIL_PROXY
        elif rng.random() < 0.2:
            hit["campaign"] = "letter"
        elif rng.random() < 0.2:
            hit["utm_source"] = rng.choice(["ana", "someone"])
        if kind == "conversion" and rng.random() < 0.8:
            hit["value"], hit["currency"] = rng.choice(["30", "-10"]), "EUR"
        sent.append(hit)
    return sent


def credited(hits: list[Hit]) -> list[tuple[Hit, str | None, str | None]]:
    """Each hit with the campaign and influencer it counts for."""

    def at(hit: Hit) -> datetime:
        return datetime.fromisoformat(hit["occurred_at"])

    def own_influencer(hit: Hit) -> str | None:
        return hit.get("utm_source") if hit.get("utm_source") in KNOWN else None

    found = []
    for hit in hits:
        campaign, influencer = hit.get("campaign"), own_influencer(hit)
        if (
            campaign is None
            and influencer is None
            and "subject" in hit
            and hit["kind"] in ("pageview", "conversion")
        ):
            clicks = [
                click
                for click in hits
                if click["kind"] == "click"
                and click.get("subject") == hit["subject"]
                and at(hit) - WINDOW <= at(click) <= at(hit)
            ]
            if clicks:
                last = max(clicks, key=at)
                campaign, influencer = last["campaign"], own_influencer(last)
        found.append((hit, campaign, influencer))
    return found


@pytest.mark.parametrize(
    ("ago", "built"), [(1, False), (1, True), (400, False)], ids=["raw", "cells", "purged"]
)
def test_campaign_and_influencer_reports_credit_the_last_click_within_the_window(
    database_url: str, policies_copy: Path, ago: int, built: bool
) -> None:
    """Over recent days, from raw events or report cells, and over days retention purged
    (credited when rolled up)."""
    settings, site = opt_out_site(database_url, policies_copy)
    ingest, read = make_key(settings, site, "ingest"), make_key(settings, site, "read")
    admin = auth(make_key(settings, site))
    with TestClient(create_app(settings)) as client:
        attributed(client, settings, site, (ingest, read, admin), ago, built)


def attributed(
    client: Client,
    settings: Settings,
    site: str,
    keys: tuple[str, str, Any],
    ago: int,
    built: bool,
) -> None:
    ingest, read, admin = keys
    campaigns = {
        "spring": {"name": "Spring", "channel": "influencer", "influencer": "ana"},
        "summer": {"name": "Summer", "channel": "influencer", "influencer": "bob"},
        "letter": {"name": "Letter", "channel": "email", "sends": 40},
    }
    for name, body in campaigns.items():
        assert client.put(f"/v1/sites/{site}/campaigns/{name}", json=body, headers=admin).is_success
    people = [subject_id() for _ in range(6)]
    days = [TODAY - timedelta(days=n) for n in range(ago, ago + 59)]
    hits = hits_over_in_order(marketing_hits(days, people, 400, seed=3))
    send(client, site, ingest, hits)
    if built:
        build_report_cells(settings)
        delete_rows(settings, "events", site=site)  # what the reports read is in the cells
    purged = ago > 395  # every kind's retention under this policy
    if purged:
        purge(settings)
        assert table_rows(settings, "events", site=site) == []
    period = {"from": min(days).isoformat(), "to": max(days).isoformat()}
    model = credited(hits)

    by_campaign = report(client, site, read, "breakdown", by="campaign", limit=10, **period)
    assert rows_of(by_campaign) == grouped(
        [hit for hit, _, _ in model], lambda hit: dict((id(h), c) for h, c, _ in model)[id(hit)]
    )
    spring = report(client, site, read, "summary", campaign="spring", **period)
    assert spring["hits"] == sum(c == "spring" for _, c, _ in model)

    letter = report(client, site, read, "campaigns/letter", **period)
    opens = [h for h, c, _ in model if c == "letter" and h["kind"] == "open"]
    human = [h for h in opens if "user_agent" not in h]
    unique_opens = len({h["subject"] for h in human if "subject" in h})
    clicks = [h for h, c, _ in model if c == "letter" and h["kind"] == "click"]
    sold = [h for h, c, _ in model if c == "letter" and h["kind"] == "conversion"]
    by_hour = Counter(datetime.fromisoformat(h["occurred_at"]).hour for h in human)
    unique_clicks = len({h["subject"] for h in clicks if "subject" in h})
    takings = sum(Decimal(h["value"]) for h in sold if "value" in h)
    assert letter == {
        "campaign": "letter",
        "sends": 40,
        "opens": len(human),
        "unique_opens": unique_opens,
        "open_rate": round(unique_opens / 40, 4),
        "machine_opens": len(opens) - len(human),
        "opens_by_hour": [by_hour[hour] for hour in range(24)],
        "clicks": len(clicks),
        "unique_clicks": unique_clicks,
        "click_to_open_rate": round(unique_clicks / unique_opens, 4) if unique_opens else None,
        "conversions": len(sold),
        "revenue": {"EUR": f"{takings:.2f}"} if any("value" in h for h in sold) else {},
        "subjects_estimated": purged,
        "suppressed": False,
    }

    influencers = report(client, site, read, "influencers", **period)
    expected = []
    for name in KNOWN:
        mine = [h for h, _, i in model if i == name]
        count = Counter(h["kind"] for h in mine)
        takings = sum(
            Decimal(h["value"]) for h in mine if h["kind"] == "conversion" and "value" in h
        )
        expected.append(
            {
                "influencer": name,
                "clicks": count["click"],
                "visits": count["pageview"],
                "conversions": count["conversion"],
                "revenue": {"EUR": f"{takings:.2f}"},
                "visit_rate": round(count["pageview"] / count["click"], 4),
                "conversion_rate": round(count["conversion"] / count["click"], 4),
            }
        )
    expected.sort(key=lambda row: (-row["clicks"], row["influencer"]))
    assert influencers == {"rows": expected, "other": None}
    assert any(c is not None and h.get("campaign") is None for h, c, _ in model)  # credited


def hits_over_in_order(hits: list[Hit]) -> list[Hit]:
    return sorted(hits, key=lambda hit: hit["occurred_at"])


def test_a_csv_cell_a_spreadsheet_would_take_for_a_formula_is_quoted(
    client: Client, shop: tuple[str, str, str]
) -> None:
    site, ingest, read = shop
    day = (TODAY - timedelta(days=1)).isoformat()
    formulas = ['=HYPERLINK("https://evil.example")', "+1+1", "@SUM(A1)"]
    at = f"{day}T10:00:00+00:00"
    send(client, site, ingest, [{"utm_source": f, "occurred_at": at} for f in formulas])
    as_csv = client.get(
        f"/v1/sites/{site}/reports/breakdown",
        params={"by": "utm_source", "from": day, "to": day},
        headers={**auth(read), "Accept": "text/csv"},
    )
    keys = [row[0] for row in csv.reader(io.StringIO(as_csv.text))][1:-1]
    assert sorted(keys) == sorted("'" + f for f in formulas)


def test_an_event_for_a_day_already_rolled_up_is_refused_and_the_reports_stay(
    client: Client, shop: tuple[str, str, str], settings: Settings
) -> None:
    """Reports read a rolled-up day from its rollup, and the next purge would delete a late
    event of it uncounted: the events API says `invalid` instead of a silent 200."""
    site, ingest, read = shop
    old = (TODAY - timedelta(days=400)).isoformat()
    send(client, site, ingest, [{"page": "/", "occurred_at": f"{old}T10:00:00+00:00"}])
    purge(settings)
    before = report(client, site, read, "summary", **{"from": old, "to": old})
    late = {"page": "/late", "occurred_at": f"{old}T11:00:00+00:00"}
    other_kind = {**late, "kind": "signup"}
    answer = client.post(
        f"/v1/sites/{site}/events", json={"events": [late, other_kind]}, headers=auth(ingest)
    )
    assert answer.json() == {"accepted": 1, "rejected": [{"index": 0, "reason": "invalid"}]}
    after = report(client, site, read, "summary", **{"from": old, "to": old})
    assert after["hits"] == before["hits"] + 1 == 2  # the new kind's day was never rolled up
