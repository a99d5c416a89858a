"""The one schedule: jobs run when due, one process at a time on PostgreSQL."""

import asyncio
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from app.base.db import make_engine, make_sessionmaker, utcnow
from app.main import create_app
from consent.policy import load_policies
from retention import schedule
from retention.schedule import Job, JobContext, run_job, scheduler
from tests.factories import POLICIES, auth, make_key, make_site, settings_for, subject_id

POLICY_SET = load_policies(POLICIES)


class Ran(msgspec.Struct):
    times: int


def test_the_server_runs_the_dsar_job_when_jobs_are_on(database_url: str) -> None:
    settings = settings_for(database_url, jobs=True)
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    with TestClient(create_app(settings_for(database_url, jobs=False))) as client:
        filed = client.post(
            f"/v1/sites/{site}/dsar",
            json={"type": "access", "subject": subject_id()},
            headers=admin,
        ).json()
    with TestClient(create_app(settings)) as client:  # the scheduler runs due jobs at start
        for _ in range(100):
            status = client.get(f"/v1/sites/{site}/dsar/{filed['id']}", headers=admin).json()
            if status["status"] == "completed":
                break
            client.blocking_portal.call(asyncio.sleep, 0.05)
    assert status["status"] == "completed"


async def test_a_failed_run_is_logged_and_the_loop_goes_on(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    async def flaky(ctx: JobContext, now: Any, dry_run: bool) -> msgspec.Struct:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return Ran(len(calls))

    async def hourly(ctx: JobContext, now: Any, dry_run: bool) -> msgspec.Struct:
        return Ran(0)

    jobs = [Job("flaky", timedelta(0), flaky), Job("hourly", timedelta(hours=1), hourly)]
    monkeypatch.setattr(schedule, "JOBS", jobs)
    engine = make_engine(database_url)
    context = JobContext(engine, make_sessionmaker(engine), POLICY_SET)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler(context, utcnow, stop, tick=0.01))
    for _ in range(300):
        if 'job flaky: {"times":2}' in caplog.text:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)  # it returns once told to stop
    await engine.dispose()
    assert len(calls) >= 2
    assert "job flaky failed: RuntimeError" in caplog.text
    assert 'job flaky: {"times":2}' in caplog.text
    assert caplog.text.count("job hourly:") == 1  # due once, then not again within the hour


async def test_a_job_held_by_another_process_is_skipped(postgresql_url: str) -> None:
    engine = make_engine(postgresql_url)
    context = JobContext(engine, make_sessionmaker(engine), POLICY_SET)

    async def work(ctx: JobContext, now: Any, dry_run: bool) -> msgspec.Struct:
        return Ran(1)

    job = Job("held", timedelta(minutes=1), work)
    other = make_engine(postgresql_url)
    async with other.connect() as connection:
        key = schedule._lock_key("held")
        await connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        assert await run_job(context, job, utcnow()) is None
        await connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    assert await run_job(context, job, utcnow()) == Ran(1)
    await other.dispose()
    await engine.dispose()


def test_every_job_has_a_distinct_lock() -> None:
    keys = {schedule._lock_key(job.name) for job in schedule.JOBS}
    assert len(keys) == len(schedule.JOBS)
