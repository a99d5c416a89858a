"""Data subject requests (SPEC §4.5) on SQLite and PostgreSQL: access, erasure, opt-out, by an
admin or by the person with their subject token, fulfilled by the dsar job."""

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import update

from app.base.db import make_engine, make_sessionmaker, utcnow
from app.base.keys import KeyRing
from app.base.settings import Settings
from app.base.tables import DsarExport, DsarRequest, Site
from app.http.dsar import add_calendar_month, due_at
from app.main import create_app
from consent import store
from consent.policy import load_policies
from retention.dsar import run_dsar
from tests.factories import (
    CHROME,
    METRICS_TOKEN,
    POLICIES,
    auth,
    dump_database,
    make_key,
    make_site,
    run,
    settings_for,
    settle,
    subject_id,
    table_rows,
)
from tests.servers import Server, environment

Client = TestClient[Any]
POLICY_SET = load_policies(POLICIES)


FORGOTTEN: list[tuple[str, str]] = []  # what the job told a consent cache to drop


def run_job(settings: Settings) -> Any:
    async def work() -> Any:
        engine = make_engine(settings.database_url)
        try:
            sessions = make_sessionmaker(engine)
            store.hear_changes(sessions, lambda *key: FORGOTTEN.append(key))
            return await run_dsar(sessions, POLICY_SET, utcnow())
        finally:
            await engine.dispose()

    return run(work())


def set_column(settings: Settings, model: Any, request_id: str, **values: Any) -> None:
    """Move a date by hand, as time would."""

    async def work() -> None:
        engine = make_engine(settings.database_url)
        async with engine.begin() as connection:
            key = model.request_id if model is DsarExport else model.id
            await connection.execute(
                update(model).where(key == uuid.UUID(request_id)).values(**values)
            )
        await engine.dispose()

    run(work())


def person_with_data(
    client: Client, settings: Settings, site: str, admin: dict[str, str]
) -> tuple[str, str]:
    """A subject whose consent the site recorded (getting their token) and who has two recorded
    events."""
    subject = subject_id()
    given = client.post(
        f"/v1/sites/{site}/consent",
        # The site's server passes on the agent of the person it saw: its own is not proof.
        json={"subject": subject, "purposes": {"analytics": True}, "proof": {"user_agent": CHROME}},
        headers=admin,
    ).json()
    events = [
        {"kind": "pageview", "subject": subject, "page": "/a"},
        {"kind": "conversion", "subject": subject, "value": 12},
    ]
    accepted = client.post(f"/v1/sites/{site}/events", json={"events": events}, headers=admin)
    assert accepted.json()["accepted"] == 2
    return subject, given["subject_token"]


def file(client: Client, site: str, headers: dict[str, str], **body: str) -> Any:
    return client.post(f"/v1/sites/{site}/dsar", json=body, headers=headers)


def declare_controller(settings: Settings, site: str, **identity: str) -> None:
    """What `pixelgate sites update --controller ...` stores (its own tests are elsewhere)."""

    async def work() -> None:
        engine = make_engine(settings.database_url)
        async with engine.begin() as connection:
            await connection.execute(update(Site).where(Site.slug == site).values(**identity))
        await engine.dispose()

    run(work())


def exported(
    client: Client, settings: Settings, site: str, admin: dict[str, str], subject: str
) -> Any:
    """The person's access export, as they would download it: filed, fulfilled by the job."""
    filed = file(client, site, admin, type="access", subject=subject)
    assert filed.status_code == 202
    assert run_job(settings).access >= 1
    export = client.get(f"/v1/sites/{site}/dsar/{filed.json()['id']}/export", headers=admin)
    assert export.status_code == 200
    assert subject not in export.text
    return export.json()


def bases_name_consent_entries(document: Any) -> None:
    """Every consent:<id> an event's basis quotes is an entry of the exported ledger."""
    ids = {entry["id"] for entry in document["consent"]}
    quoted = {
        basis.removeprefix("consent:")
        for event in document["events"]
        for basis in event["basis"].values()
        if basis.startswith("consent:")
    }
    assert quoted and quoted <= ids
    assert all(str(uuid.UUID(i)) == i for i in ids)  # the same text form on both databases


@pytest.mark.parametrize(
    ("received", "regulation", "policy", "due"),
    [
        ("2026-01-31T10:00:00", "gdpr", "ccpa", "2026-02-28T23:59:59"),
        ("2028-01-31T10:00:00", "gdpr", "ccpa", "2028-02-29T23:59:59"),
        ("2026-12-15T10:00:00", "gdpr", "ccpa", "2027-01-15T23:59:59"),
        ("2026-01-31T10:00:00", "ccpa", "ccpa", "2026-03-17T23:59:59"),
        ("2026-03-31T10:00:00", "gdpr", "gdpr-strict", "2026-04-30T23:59:59"),  # max_days=30
        ("2026-03-01T10:00:00", "ccpa", "gdpr-strict", "2026-03-31T23:59:59"),  # policy shortens
    ],
)
def test_due_dates_follow_the_regulation_and_a_policy_may_only_shorten_them(
    received: str, regulation: str, policy: str, due: str
) -> None:
    at = datetime.fromisoformat(received).replace(tzinfo=UTC)
    assert due_at(at, regulation, POLICY_SET[policy]) == datetime.fromisoformat(due).replace(
        tzinfo=UTC
    )
    assert add_calendar_month(at) > at


def test_an_access_request_is_exported_once_completed(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    subject, _ = person_with_data(client, settings, site, admin)
    filed = file(client, site, admin, type="access", subject=subject)
    assert filed.status_code == 202
    body = filed.json()
    assert body["status"] == "pending" and body["due_at"] > body["received_at"]
    url = f"/v1/sites/{site}/dsar/{body['id']}"

    early = client.get(f"{url}/export", headers=admin)
    assert early.status_code == 404
    assert early.headers["content-type"].startswith("application/problem+json")
    assert "pending" in early.json()["detail"]

    assert run_job(settings).access >= 1
    status = client.get(url, headers=admin).json()
    assert status["status"] == "completed" and status["completed_at"]
    assert status["counts"] == {"events": 2, "consent_ledger": 1, "audience_memberships": 0}

    export = client.get(f"{url}/export", headers=admin)
    assert export.status_code == 200
    document = export.json()
    assert document["schema_version"] == 2 and document["site"] == site
    assert document["subject"] == KeyRing(settings.secret_key).pseudonym(site, subject)
    assert sorted(e["kind"] for e in document["events"]) == ["conversion", "pageview"]
    assert set(document["events"][0]) == {
        "occurred_at", "kind", "page", "campaign", "utm_source", "utm_medium", "utm_campaign",
        "utm_content", "utm_term", "referrer", "device", "browser", "os", "jurisdiction",
        "value", "currency", "machine", "basis",
    }  # fmt: skip
    assert document["consent"][0]["ua_family"] == "Chrome / Windows"
    assert document["audience_memberships"] == []
    assert {p["purpose"] for p in document["about"]["purposes"]} == {
        "analytics",
        "marketing",
        "email",
    }
    assert subject not in export.text

    set_column(settings, DsarExport, body["id"], expires_at=utcnow() - timedelta(seconds=1))
    expired = client.get(f"{url}/export", headers=admin)
    assert expired.status_code == 404 and "expired" in expired.json()["detail"]


CONTROLLER = {
    "controller": "Example Shop GmbH",
    "contact_email": "privacy@shop.example",
    "address": "Hauptstrasse 1, 10115 Berlin, Germany",
    "phone": "+49 30 123456",
    "homepage": "https://shop.example/",
}


def test_an_export_names_the_controller_and_explains_each_purpose_and_field(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    declare_controller(settings, site, **CONTROLLER)
    admin = auth(make_key(settings, site))
    subject, _ = person_with_data(client, settings, site, admin)
    document = exported(client, settings, site, admin, subject)
    about = document["about"]

    assert document["schema_version"] == 2
    assert about["controller"] == {
        "declared": True,
        "name": CONTROLLER["controller"],
        **{k: v for k, v in CONTROLLER.items() if k != "controller"},
    }
    assert "HMAC-SHA256" in about["pseudonym"]
    assert "different pseudonym on each site" in about["pseudonym"]
    assert "Neither you nor anyone else can turn the pseudonym back" in about["pseudonym"]

    policy = POLICY_SET["gdpr-strict"].file
    purposes = {p["purpose"]: p for p in about["purposes"]}
    assert set(purposes) == set(policy.purposes)
    for name, declared in policy.purposes.items():
        exported_purpose = purposes[name]
        assert exported_purpose["description"] == declared.description != ""
        assert exported_purpose["retention_days"] == declared.retention_days
        assert exported_purpose["retention"] == (
            f"raw events {declared.retention_days} days, then anonymous daily totals"
        )
        assert exported_purpose["consent_ttl_days"] == declared.consent_ttl_days
        assert exported_purpose["sale_or_share"] is declared.sale_or_share
        partners = [r for r in exported_purpose["recipients"] if "advertising partners" in r]
        assert len(partners) == declared.sale_or_share
        assert len(exported_purpose["recipients"]) == 2 + declared.sale_or_share
        assert exported_purpose["exemption"] is None  # gdpr-strict counts nothing anonymously
    assert {n for n, p in purposes.items() if p["profiling"]} == {"marketing"}
    # Opt-in in the EU; the policy's California override is the CCPA's opt-out.
    basis = {
        (name, b["jurisdiction"]): b["basis"]
        for name, p in purposes.items()
        for b in p["legal_basis"]
    }
    assert basis == {
        ("analytics", "eu"): "consent",
        ("marketing", "eu"): "consent",
        ("email", "eu"): "consent",
        ("analytics", "us-ca"): "opt_out",
        ("marketing", "us-ca"): "opt_out",
        ("email", "us-ca"): "consent",
    }
    california = next(
        b for b in purposes["marketing"]["legal_basis"] if b["jurisdiction"] == "us-ca"
    )
    assert "until you opt out (CCPA)" in california["explained"]
    assert "Global Privacy Control" in california["explained"]

    bases_name_consent_entries(document)
    assert {e["basis"]["analytics"] for e in document["events"]} == {
        f"consent:{document['consent'][0]['id']}"
    }
    fields = document["fields"]
    for field in (
        "events[].machine",
        "events[].jurisdiction",
        "audience_memberships",
        "consent[].id",
    ):
        assert fields[field]
    assert "image proxy" in fields["events[].machine"]
    assert "audiences" in fields["audience_memberships"]


def test_an_export_of_a_site_without_a_declared_controller_says_so(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    admin = auth(make_key(settings, site))
    subject = subject_id()
    # Before any choice the CCPA's opt-out model records analytics; then the person consents.
    before = {"kind": "pageview", "subject": subject, "page": "/before"}
    assert (
        client.post(f"/v1/sites/{site}/events", json={"events": [before]}, headers=admin).json()[
            "accepted"
        ]
        == 1
    )
    client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject, "purposes": {"analytics": True, "marketing": False}},
        headers=admin,
    )
    after = {"kind": "pageview", "subject": subject, "page": "/after"}
    assert (
        client.post(f"/v1/sites/{site}/events", json={"events": [after]}, headers=admin).json()[
            "accepted"
        ]
        == 1
    )
    document = exported(client, settings, site, admin, subject)

    controller = document["about"]["controller"]
    assert controller["declared"] is False
    assert "not declared" in controller["name"] and repr(site) in controller["name"]
    assert [controller[k] for k in ("contact_email", "address", "phone", "homepage")] == [None] * 4
    bases = [e["basis"]["analytics"] for e in document["events"]]
    assert bases[0] == "default:ccpa@2025-07-07"
    assert bases[1] == f"consent:{document['consent'][0]['id']}"
    bases_name_consent_entries(document)
    purposes = {p["purpose"]: p for p in document["about"]["purposes"]}
    assert [b["jurisdiction"] for b in purposes["analytics"]["legal_basis"]] == ["us-ca"]
    assert purposes["analytics"]["legal_basis"][0]["basis"] == "opt_out"
    assert purposes["email"]["legal_basis"][0]["basis"] == "consent"
    assert purposes["marketing"]["retention_days"] == 365


def test_erasure_leaves_nothing_under_the_pseudonym(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    subject, _ = person_with_data(client, settings, site, admin)
    other, _ = person_with_data(client, settings, site, admin)
    pseudonym = KeyRing(settings.secret_key).pseudonym(site, subject)
    access = file(client, site, admin, type="access", subject=subject).json()
    run_job(settings)
    erasure = file(client, site, admin, type="erasure", subject=subject, regulation="ccpa").json()
    run_job(settings)

    done = client.get(f"/v1/sites/{site}/dsar/{erasure['id']}", headers=admin).json()
    assert done["status"] == "completed"
    assert done["counts"] == {
        "events": 2,
        "consent_state": 1,
        "consent_ledger": 1,
        "exports": 1,
        "audience_memberships": 0,
    }
    assert pseudonym not in dump_database(settings.database_url)
    assert (site, pseudonym) in FORGOTTEN
    others = KeyRing(settings.secret_key).pseudonym(site, other)
    assert others in dump_database(settings.database_url)  # nobody else was touched
    audit = {r["type"]: r for r in table_rows(settings, "dsar_requests", site=site)}
    assert audit["erasure"]["subject"] is None and len(audit["erasure"]["subject_hash"]) == 64
    assert audit["access"]["subject"] is None
    gone = client.get(f"/v1/sites/{site}/dsar/{access['id']}/export", headers=admin)
    assert gone.status_code == 404
    # And the pixel no longer finds a consent for them.
    client.get(f"/p/{site}/pixel.gif", params={"u": subject}, headers={"User-Agent": CHROME})
    assert all(e["subject"] != pseudonym for e in table_rows(settings, "events", site=site))


def test_a_subject_token_files_and_reads_only_its_own_requests_on_its_own_site(
    client: Client, settings: Settings
) -> None:
    site, elsewhere = make_site(settings), make_site(settings)
    admin = auth(make_key(settings, site))
    subject, token = person_with_data(client, settings, site, admin)
    mine = {"X-Subject-Token": token}
    own = file(client, site, mine, type="access", subject=subject)
    assert own.status_code == 202
    assert client.get(f"/v1/sites/{site}/dsar/{own.json()['id']}", headers=mine).status_code == 200
    assert file(client, site, mine, type="erasure", subject=subject_id()).status_code == 403
    assert file(client, elsewhere, mine, type="access", subject=subject).status_code == 403
    theirs = file(client, site, admin, type="access", subject=subject_id()).json()
    assert client.get(f"/v1/sites/{site}/dsar/{theirs['id']}", headers=mine).status_code == 403
    forged = {"X-Subject-Token": token[:-2] + "xx"}
    assert file(client, site, forged, type="access", subject=subject).status_code == 401
    assert file(client, site, {}, type="access", subject=subject).status_code == 401


def test_an_opt_out_needs_no_identity_and_takes_effect_at_once(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    subject = subject_id()
    filed = file(client, site, {}, type="opt_out", subject=subject, regulation="ccpa")
    assert filed.status_code == 202
    assert filed.json()["status"] == "completed"
    assert filed.json()["counts"] == {"purposes_denied": 1}
    pseudonym = KeyRing(settings.secret_key).pseudonym(site, subject)
    [state] = table_rows(settings, "consent_state", site=site, subject=pseudonym)
    assert (state["purpose"], state["granted"]) == ("marketing", False)
    client.get(
        f"/p/{site}/pixel.gif",
        params={"u": subject, "k": "conversion"},
        headers={"User-Agent": CHROME},
    )
    client.get(f"/p/{site}/pixel.gif", params={"u": subject}, headers={"User-Agent": CHROME})
    settle(client)
    assert [e["kind"] for e in table_rows(settings, "events", site=site)] == ["pageview"]


def test_an_opt_out_filed_by_the_sites_server_keeps_no_network_proof_of_it(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    admin = auth(make_key(settings, site))
    by_key = {**admin, "User-Agent": CHROME}
    assert file(client, site, by_key, type="opt_out", subject=subject_id()).status_code == 202
    browser = {"User-Agent": CHROME}
    assert file(client, site, browser, type="opt_out", subject=subject_id()).status_code == 202
    rows = table_rows(settings, "consent_ledger", site=site)
    assert {row["source"] for row in rows} == {"opt-out-request"}
    assert sorted(str(row["ua_family"]) for row in rows) == ["Chrome / Windows", "None"]


def test_requests_are_listed_with_overdue_flags_and_counted_in_metrics(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    late = file(client, site, admin, type="access", subject=subject_id()).json()
    file(client, site, admin, type="erasure", subject=subject_id())
    set_column(settings, DsarRequest, late["id"], due_at=utcnow() - timedelta(days=1))
    listed = client.get(f"/v1/sites/{site}/dsar", params={"status": "pending"}, headers=admin)
    flags = {r["id"]: r["overdue"] for r in listed.json()["requests"]}
    assert len(flags) == 2 and flags[late["id"]] is True and sum(flags.values()) == 1
    metrics = client.get("/metrics", headers=auth(METRICS_TOKEN)).text
    assert "pixelgate_dsar_overdue" in metrics and "pixelgate_dsar_open" in metrics
    assert (
        client.get(
            f"/v1/sites/{site}/dsar", headers=auth(make_key(settings, site, "read"))
        ).status_code
        == 403
    )


def test_a_token_issued_before_an_erasure_opens_nothing_and_a_later_one_does(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    subject, token = person_with_data(client, settings, site, admin)
    old = {"X-Subject-Token": token}
    access = file(client, site, old, type="access", subject=subject).json()
    run_job(settings)
    file(client, site, old, type="erasure", subject=subject)
    run_job(settings)

    consent = f"/v1/sites/{site}/consent/{subject}"
    request = f"/v1/sites/{site}/dsar/{access['id']}"
    refused = [
        client.get(consent, headers=old),
        client.get(f"{consent}/history", headers=old),
        client.delete(consent, headers=old),
        file(client, site, old, type="access", subject=subject),
        client.get(request, headers=old),
        client.get(f"{request}/export", headers=old),
    ]
    assert [r.status_code for r in refused] == [401] * 6
    again = client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject, "purposes": {"analytics": True}},
        headers=old,
    )
    assert again.status_code == 403
    assert table_rows(settings, "consent_ledger", site=site) == []

    # The site records the person's consent anew: the token issued now opens their data.
    given = client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject, "purposes": {"analytics": True}},
        headers=admin,
    ).json()
    new = {"X-Subject-Token": given["subject_token"]}
    fresh = file(client, site, new, type="access", subject=subject).json()
    run_job(settings)
    fresh_request = f"/v1/sites/{site}/dsar/{fresh['id']}"
    opened = [
        client.get(consent, headers=new),
        client.get(f"{consent}/history", headers=new),
        client.get(request, headers=new),
        client.get(fresh_request, headers=new),
        client.get(f"{fresh_request}/export", headers=new),
        client.delete(consent, headers=new),
    ]
    assert [r.status_code for r in opened] == [200] * 6


def test_a_limited_request_says_when_to_retry_with_the_sites_cors_and_tokens_count_too(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(database_url, consent_rate_limit=2)
    shop = {"Origin": "https://shop.example"}
    site = make_site(
        settings, policy="ccpa", jurisdiction="us-ca", origins=("https://shop.example",)
    )
    admin = auth(make_key(settings, site))
    with TestClient(create_app(settings)) as client:
        limiter = client.app.state.ctx.consent_limiter
        monkeypatch.setattr(limiter, "clock", lambda: 1_800_000_045.0)  # 15 s before the next
        opt_outs = [
            file(client, site, shop, type="opt_out", subject=subject_id(), regulation="ccpa")
            for _ in range(3)
        ]
        assert [r.status_code for r in opt_outs] == [202, 202, 429]
        limited = opt_outs[-1]
        assert limited.headers["retry-after"] == "15"
        assert limited.headers["access-control-allow-origin"] == "https://shop.example"
        assert limited.headers["content-type"].startswith("application/problem+json")

        subject, token = person_with_data(client, settings, site, admin)
        mine = {**shop, "X-Subject-Token": token}
        filed = [file(client, site, mine, type="access", subject=subject) for _ in range(2)]
        assert [r.status_code for r in filed] == [202, 202]
        over = file(client, site, mine, type="access", subject=subject)
        assert over.status_code == 429 and over.headers["retry-after"] == "15"
        assert over.headers["access-control-allow-origin"] == "https://shop.example"
        read = client.get(f"/v1/sites/{site}/dsar/{filed[0].json()['id']}", headers=mine)
        assert read.status_code == 429
        assert file(client, site, admin, type="access", subject=subject).status_code == 202
    assert len(table_rows(settings, "dsar_requests", site=site, type="access")) == 3


@pytest.mark.parametrize("request_id", ["3f1c0000-0000-4000-8000-000000000000", "not-a-uuid"])
def test_an_unknown_request_is_a_404(client: Client, settings: Settings, request_id: str) -> None:
    site = make_site(settings)
    response = client.get(
        f"/v1/sites/{site}/dsar/{request_id}", headers=auth(make_key(settings, site))
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_bad_request_body_is_refused(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    assert file(client, site, admin, type="delete_everything", subject="x").status_code == 422
    assert (
        file(client, site, admin, type="access", subject="x", regulation="lgpd").status_code == 422
    )
    assert file(client, site, admin, type="access", subject="").status_code == 422
    assert table_rows(settings, "dsar_requests", site=site) == []


@pytest.mark.slow
def test_racing_processes_fulfil_each_request_exactly_once(
    postgresql_url: str, tmp_path: Path
) -> None:
    """Two servers (each runs the job as it starts) and two `pixelgate jobs run` at once. A
    second fulfilment would insert a second export under the same key and fail loudly."""
    settings = settings_for(postgresql_url)
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    with TestClient(create_app(settings_for(postgresql_url, jobs=False))) as client:
        subjects = [person_with_data(client, settings, site, admin)[0] for _ in range(5)]
        for n in range(240):
            file(client, site, admin, type="access", subject=subjects[n % 5])
    servers = [Server(postgresql_url, tmp_path / name) for name in ("one", "two")]
    cli = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "jobs", "run", "--only", "dsar"],
            cwd=tmp_path,
            env=environment(postgresql_url),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for server in servers:
        server.start()
    outputs = [process.communicate(timeout=60)[0] for process in cli]
    assert [process.returncode for process in cli] == [0, 0], outputs
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the servers' own runs may still be finishing
        statuses = {r["status"] for r in table_rows(settings, "dsar_requests", site=site)}
        if statuses == {"completed"}:
            break
        time.sleep(0.2)
    for server in servers:
        server.stop()
        server.assert_clean_log()
        assert "failed" not in server.log()
    requests = table_rows(settings, "dsar_requests", site=site)
    assert len(requests) == 240 and {r["status"] for r in requests} == {"completed"}
    assert len(table_rows(settings, "dsar_exports", site=site)) == 240


@pytest.mark.slow
def test_concurrent_job_runs_claim_each_request_once_without_the_advisory_lock(
    postgresql_url: str,
) -> None:
    """Below the advisory lock, row claims alone keep two runs off the same request."""
    settings = settings_for(postgresql_url)
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    with TestClient(create_app(settings_for(postgresql_url, jobs=False))) as client:
        subject = person_with_data(client, settings, site, admin)[0]
        for _ in range(60):
            file(client, site, admin, type="access", subject=subject)

    async def race() -> list[int]:
        engines = [make_engine(postgresql_url) for _ in range(4)]
        try:
            runs = await asyncio.gather(
                *(run_dsar(make_sessionmaker(e), POLICY_SET, utcnow()) for e in engines)
            )
        finally:
            for engine in engines:
                await engine.dispose()
        return [r.access for r in runs]

    shares = run(race())
    assert sum(shares) == 60 and sum(1 for s in shares if s) > 1  # shared, and each once
    assert len(table_rows(settings, "dsar_exports", site=site)) == 60


@pytest.mark.parametrize("status", ["", "pending\x00", "done"])
def test_listing_requests_by_a_status_there_is_not_is_a_422_naming_it(
    client: Client, settings: Settings, status: str
) -> None:
    site = make_site(settings)
    response = client.get(
        f"/v1/sites/{site}/dsar", params={"status": status}, headers=auth(make_key(settings, site))
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"].startswith("status")
