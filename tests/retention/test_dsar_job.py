"""The dsar job's own edges: a dry run changes nothing; a request whose site lost its policy is
rejected rather than stuck."""

from typing import Any

from litestar.testing import TestClient

from app.db import make_engine, make_sessionmaker, utcnow
from app.main import create_app
from consent.policy import load_policies
from retention.dsar import JobCounts, run_dsar
from tests.factories import (
    POLICIES,
    auth,
    make_key,
    make_site,
    run,
    settings_for,
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
