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


async def test_every_job_of_the_schedule_runs_as_a_dry_run(database_url: str) -> None:
    """Each job once, by name, as the scheduler would run it: what the server's scheduler
    reaches before a test stops it is a matter of timing."""
    engine = make_engine(database_url)
    try:
        context = JobContext(engine, make_sessionmaker(engine), POLICY_SET)
        for job in schedule.JOBS:
            assert await run_job(context, job, utcnow(), dry_run=True) is not None, job.name
    finally:
        await engine.dispose()


async def test_a_job_under_way_when_told_to_stop_runs_to_its_end_and_no_other_starts(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    stop, ran = asyncio.Event(), []

    async def first(ctx: JobContext, now: Any, dry_run: bool) -> msgspec.Struct:
        stop.set()  # the server stops while this job runs
        await asyncio.sleep(0.05)
        ran.append("first")
        return Ran(1)

    async def second(ctx: JobContext, now: Any, dry_run: bool) -> msgspec.Struct:
        ran.append("second")
        return Ran(2)

    jobs = [Job("first", timedelta(0), first), Job("second", timedelta(0), second)]
    monkeypatch.setattr(schedule, "JOBS", jobs)
    engine = make_engine(database_url)
    context = JobContext(engine, make_sessionmaker(engine), POLICY_SET)
    await asyncio.wait_for(scheduler(context, utcnow, stop, tick=0.01), 5)
    await engine.dispose()
    assert ran == ["first"]
