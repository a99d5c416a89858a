"""The dsar job's own edges: a dry run changes nothing; a request whose site lost its policy is
rejected rather than stuck; an export explains every field and every kind of legal basis."""

from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import event, update

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing, audit_hash
from app.base.tables import Site
from app.main import create_app
from consent import store
from consent.policy import load_policies
from retention.dsar import FIELDS, Export, JobCounts, run_dsar
from tests.factories import (
    CHROME,
    POLICIES,
    auth,
    make_key,
    make_site,
    run,
    settings_for,
    settle,
    subject_id,
    table_rows,
)

POLICY_SET = load_policies(POLICIES)


def job(database_url: str, policies: Any = POLICY_SET, dry_run: bool = False) -> JobCounts:
    async def work() -> JobCounts:
        engine = make_engine(database_url)
        try:
            return await run_dsar(make_sessionmaker(engine), policies, utcnow(), dry_run=dry_run)
        finally:
            await engine.dispose()

    return run(work())


def file_two(database_url: str) -> str:
    settings = settings_for(database_url)
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    with TestClient(create_app(settings)) as client:
        for kind in ("access", "erasure"):
            body = {"type": kind, "subject": subject_id()}
            assert (
                client.post(f"/v1/sites/{site}/dsar", json=body, headers=admin).status_code == 202
            )
    return site


def test_a_dry_run_counts_what_would_be_done_and_does_nothing(database_url: str) -> None:
    site = file_two(database_url)
    counts = job(database_url, dry_run=True)
    assert counts.access >= 1 and counts.erasure >= 1
    rows = table_rows(settings_for(database_url), "dsar_requests", site=site)
    assert {r["status"] for r in rows} == {"pending"}
    job(database_url)  # leave nothing pending for the tests that follow


def test_a_request_whose_policy_is_gone_is_rejected(database_url: str) -> None:
    site = file_two(database_url)
    job(database_url, policies={})
    rows = table_rows(settings_for(database_url), "dsar_requests", site=site)
    assert {r["status"] for r in rows} == {"rejected"}
    assert all(r["subject"] is None for r in rows)


def field_paths(type_: msgspec.inspect.Type, prefix: str = "") -> set[str]:
    """Every field of the export's layout, as FIELDS names them (dicts keyed by purpose end
    the path: their keys are the policy's purpose names)."""
    if isinstance(type_, msgspec.inspect.ListType):
        return field_paths(type_.item_type, prefix + "[]")
    if isinstance(type_, msgspec.inspect.UnionType):  # only `X | None` here
        return set().union(*(field_paths(t, prefix) for t in type_.types))
    if not isinstance(type_, msgspec.inspect.StructType):
        return set()
    found = set()
    for field in type_.fields:
        path = f"{prefix}.{field.encode_name}".lstrip(".")
        found |= {path} | field_paths(field.type, path)
    return found


def test_every_field_of_the_export_is_explained_once_and_nothing_else_is() -> None:
    assert field_paths(msgspec.inspect.type_info(Export)) == set(FIELDS)
    assert all(text.strip() and text == text.strip() for text in FIELDS.values())


LENIENT = """\
name = "lenient"
version = "1"
anonymous_counting = true

[purposes.analytics]
default = "granted"

[purposes.ads]
default = "granted"
description = "showing our advertisements on other sites"
sale_or_share = true

[kinds]
"*" = ["analytics"]

[jurisdictions]
us-tx = { analytics = "granted" }
us-ca = { ads = "granted" }
gb = { ads = "granted" }
jp = { analytics = "granted" }
"""


def declare(database_url: str, site: str, **identity: str) -> None:
    async def work() -> None:
        engine = make_engine(database_url)
        async with engine.begin() as connection:
            await connection.execute(update(Site).where(Site.slug == site).values(**identity))
        await engine.dispose()

    run(work())


def test_an_export_names_each_legal_basis_and_the_exemption_and_admits_what_is_missing(
    database_url: str, policies_copy: Path
) -> None:
    (policies_copy / "lenient.toml").write_text(LENIENT)
    settings = settings_for(database_url, policies_dir=policies_copy)
    policies = load_policies(policies_copy)
    documents = {}
    with TestClient(create_app(settings)) as client:
        for declared in (False, True):
            site = make_site(settings, policy="lenient")
            if declared:
                declare(database_url, site, controller="Lenient Ltd", contact_email="dpo@x.test")
            admin = auth(make_key(settings, site))
            subject = subject_id()
            event = {"kind": "pageview", "subject": subject, "page": "/"}
            sent = client.post(f"/v1/sites/{site}/events", json={"events": [event]}, headers=admin)
            assert sent.json()["accepted"] == 1
            body = {"type": "access", "subject": subject}
            filed = client.post(f"/v1/sites/{site}/dsar", json=body, headers=admin).json()
            assert job(database_url, policies).access >= 1
            url = f"/v1/sites/{site}/dsar/{filed['id']}/export"
            documents[declared] = client.get(url, headers=admin).json()

    anonymous, named = documents[False]["about"], documents[True]["about"]
    assert anonymous["controller"]["declared"] is False
    assert "not declared" in anonymous["controller"]["name"]
    assert named["controller"] == {
        "declared": True,
        "name": "Lenient Ltd",
        "contact_email": "dpo@x.test",
        "address": None,
        "phone": None,
        "homepage": None,
    }
    purposes = {p["purpose"]: p for p in named["purposes"]}
    assert purposes["analytics"]["description"].startswith("not described by the policy")
    assert purposes["ads"]["description"] == "showing our advertisements on other sites"
    assert all("CNIL" in p["exemption"] for p in purposes.values())
    explained = {
        (name, b["jurisdiction"]): (b["basis"], b["explained"])
        for name, p in purposes.items()
        for b in p["legal_basis"]
    }
    assert {key: basis for key, (basis, _) in explained.items()} == {
        ("analytics", "eu"): "legitimate_interest",
        ("ads", "eu"): "legitimate_interest",
        ("analytics", "us-ca"): "opt_out",
        ("ads", "us-ca"): "opt_out",
        ("analytics", "us-tx"): "opt_out",
        ("ads", "us-tx"): "opt_out",
        ("analytics", "gb"): "legitimate_interest",
        ("ads", "gb"): "legitimate_interest",
        ("analytics", "jp"): "opt_out",
        ("ads", "jp"): "opt_out",
    }
    assert "GDPR Art. 6(1)(f)" in explained["analytics", "eu"][1]
    assert "(CCPA)" in explained["analytics", "us-ca"][1]
    assert "(US state privacy law)" in explained["analytics", "us-tx"][1]
    assert "(UK GDPR Art. 6(1)(f))" in explained["ads", "gb"][1]
    # pixelgate knows no law for Japan, and names none.
    assert explained["analytics", "jp"][1].startswith("permitted until you opt out: ")
    # Global Privacy Control opts out of sale/share purposes only.
    assert "Global Privacy Control" in explained["ads", "us-tx"][1]
    assert "Global Privacy Control" not in explained["analytics", "us-ca"][1]
    event = documents[True]["events"][0]
    assert event["basis"] == {"analytics": "default:lenient@1"}
    assert documents[True]["consent"] == []


def test_an_erasure_deletes_consent_rows_only_through_the_registry(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """consent.store alone deletes a subject's consent (and so alone announces it): every
    statement of the erasure that deletes from a consent table runs inside store.erase()."""
    settings = settings_for(database_url)
    site = make_site(settings)
    person = subject_id()
    pseudonym = KeyRing(settings.secret_key).pseudonym(site, person)
    with TestClient(create_app(settings)) as client:
        body = {"type": "erasure", "subject": person}
        filed = client.post(
            f"/v1/sites/{site}/dsar", json=body, headers=auth(make_key(settings, site))
        )
        assert filed.status_code == 202
    real, inside = store.erase, list[bool]()

    async def erase(*args: Any, **kwargs: Any) -> dict[str, int]:
        inside.append(True)
        try:
            return await real(*args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(store, "erase", erase)
    deletes: list[tuple[str, bool]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE") and "consent_" in statement:
            deletes.append((statement.split("WHERE")[0].strip(), bool(inside)))

    async def work() -> None:
        engine = make_engine(database_url)
        sessions = make_sessionmaker(engine)
        async with transaction(sessions) as session:
            await store.record(
                session,
                site=site,
                subject=pseudonym,
                purposes={"analytics": True},
                policy=POLICY_SET["gdpr-strict"],
                proof=store.Proof(source="test", ip_prefix=None, ua_family=None, jurisdiction="eu"),
                now=utcnow(),
            )
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        before = utcnow()
        await run_dsar(sessions, POLICY_SET, utcnow())
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
        # What the erasure leaves is its audit record: when, and under whose audit hash.
        erased = audit_hash(KeyRing(settings.secret_key), pseudonym)
        async with sessions() as session:
            when = await store.erased_at(session, site, [erased, "never-erased"])
        assert list(when) == [erased] and before <= when[erased] <= utcnow()
        await engine.dispose()

    run(work())
    assert {table for table, _ in deletes} >= {
        "DELETE FROM consent_state",
        "DELETE FROM consent_ledger",
    }
    assert all(by_registry for _, by_registry in deletes)
    for table in ("consent_state", "consent_ledger"):
        assert table_rows(settings, table, site=site, subject=pseudonym) == []


def test_an_export_lists_the_audiences_the_subject_is_in_and_an_erasure_leaves_them_in_none(
    database_url: str,
) -> None:
    settings = settings_for(database_url)
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    person = subject_id()
    with TestClient(create_app(settings)) as client:
        body = {"subject": person, "purposes": {"analytics": True, "marketing": True}}
        assert client.post(f"/v1/sites/{site}/consent", json=body, headers=admin).status_code == 201
        client.get(
            f"/p/{site}/pixel.gif",
            params={"u": person, "p": "/shoe"},
            headers={"User-Agent": CHROME},
        )
        settle(client)
        audiences = {}
        for name, prefix in [("shoes", "/shoe"), ("hats", "/hat")]:
            rule = {"page_prefix": prefix}
            made = client.post(
                f"/v1/sites/{site}/audiences", json={"name": name, "rule": rule}, headers=admin
            )
            audiences[name] = made.json()["id"]
        access = client.post(
            f"/v1/sites/{site}/dsar", json={"type": "access", "subject": person}, headers=admin
        )
        job(database_url)
        export = client.get(f"/v1/sites/{site}/dsar/{access.json()['id']}/export", headers=admin)
        assert export.json()["audience_memberships"] == ["shoes"]
        erasure = client.post(
            f"/v1/sites/{site}/dsar", json={"type": "erasure", "subject": person}, headers=admin
        )
        job(database_url)
        done = client.get(f"/v1/sites/{site}/dsar/{erasure.json()['id']}", headers=admin).json()
        assert done["counts"]["audience_memberships"] == 1
        member = client.get(
            f"/v1/sites/{site}/audiences/{audiences['shoes']}/members/{person}", headers=admin
        )
        assert member.json() == {"member": False}
