"""create_app(settings) -> Litestar: the only wiring file. Nothing happens at import time."""

import asyncio
import gc
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing
from app.base.metrics import Metrics
from app.base.settings import Settings, load_settings
from app.base.sites import SiteDirectory
from app.hits.queue import BatchWriter, Ingest
from app.hits.spool import lock_directory
from app.hits.writer import writer_for
from app.hits.writer_process import WriterProcess
from app.http import (
    audiences,
    banner,
    deps,
    dsar,
    events,
    health,
    links,
    openapi,
    pages,
    pixel,
    reports,
    web,
)
from app.http import consent as consent_api
from app.http import sites as sites_api
from app.http.context import Context
from app.http.front import Front
from app.http.problems import ApiRequest, on_http_exception, on_unexpected
from app.http.ratelimit import RateLimiter
from consent.cache import ConsentCache, listen
from consent.policy import load_policies
from consent.receipts import Signer, publish_key
from retention.schedule import JobContext, scheduler

log = logging.getLogger("pixelgate.app")


async def _stopped(task: asyncio.Task[None] | None, seconds: float = 10) -> None:
    """Wait for a background task told to stop, for a while, then cancel it: a job unlocks
    and gives back its connection before the engine goes (else the event loop may be left
    with a task waiting on a connection that no longer exists, and never close)."""
    if task is None:
        return
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.warning("%s still running %.0f s after it was told to stop", task.get_name(), seconds)
        task.cancel()


def create_app(settings: Settings, writer_process: bool = False) -> Litestar:
    """Policies are validated here, so a bad one stops start-up before anything listens.

    `writer_process`: write hits from a child process (app/hits/writer_process.py), as `pixelgate
    serve` does; otherwise in this one (an embedded app, the tests)."""
    policies = load_policies(settings.policies_dir)
    keyring = KeyRing(settings.secret_key)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    metrics = Metrics()
    consent = ConsentCache(sessions)
    sites = SiteDirectory(sessions)
    writer: BatchWriter
    if writer_process:
        writer = WriterProcess(settings, consent)
    else:
        writer = writer_for(settings, engine, sessions, sites, consent)
    ctx = Context(
        settings=settings,
        engine=engine,
        sessions=sessions,
        keyring=keyring,
        policies=policies,
        signer=Signer(keyring),
        consent_limiter=RateLimiter(settings.consent_rate_limit),
        sites=sites,
        consent=consent,
        ingest=Ingest(writer, metrics),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # `pixelgate serve` holds the spool directory for all its workers (app/cli.py); an
        # app that writes in process is a server of its own.
        spool_lock = None if writer_process else lock_directory(settings.spool_dir)
        try:
            async with serving():
                yield
        finally:
            if spool_lock is not None:
                os.close(spool_lock)

    @asynccontextmanager
    async def serving() -> AsyncIterator[None]:
        log.info("public URL %s (PIXELGATE_PUBLIC_URL)", settings.base_url)
        async with transaction(ctx.sessions) as session:
            await publish_key(session, ctx.signer, utcnow())
        await sites.load()
        listener = None
        if not settings.is_sqlite:
            ready = asyncio.Event()
            listener = asyncio.create_task(
                listen(consent, settings.database_url, ready), name="pixelgate-consent-listener"
            )
            await asyncio.wait_for(ready.wait(), timeout=10)
        await ctx.ingest.start()
        jobs, stop_jobs = None, asyncio.Event()
        if settings.jobs:
            job_context = JobContext(engine, sessions, policies)
            jobs = asyncio.create_task(
                scheduler(job_context, utcnow, stop_jobs), name="pixelgate-jobs"
            )
        try:
            yield
        finally:
            stop_jobs.set()  # a job under way runs to its end
            await _stopped(jobs)
            await ctx.ingest.close()  # consent changes still reach the cache while it drains
            if listener is not None:
                listener.cancel()  # it listens until told otherwise
            await _stopped(listener)
            await engine.dispose()

    app = Litestar(
        route_handlers=[
            pixel.pixel_edge,
            pixel.debug,
            sites_api.read_site,
            sites_api.key_scope,
            sites_api.update_controller,
            pixel.metrics,
            dsar.file_request,
            dsar.read_request,
            dsar.download_export,
            dsar.list_requests,
            events.post_events,
            reports.summary,
            reports.breakdown,
            reports.timeseries,
            reports.campaign,
            reports.influencers,
            events.pixel_urls,
            links.put_campaign,
            links.list_campaigns,
            links.read_campaign,
            links.delete_campaign,
            links.create_link,
            links.list_links,
            links.read_link,
            links.delete_link,
            links.follow_link,
            audiences.create_audience,
            audiences.list_audiences,
            audiences.read_audience,
            audiences.delete_audience,
            audiences.audience_members,
            audiences.is_member,
            audiences.match_audience,
            consent_api.consent_preflight,
            consent_api.give_consent,
            consent_api.read_consent,
            consent_api.consent_history,
            consent_api.withdraw_consent,
            consent_api.jwks,
            consent_api.jwks_head,
            consent_api.policy_notice,
            consent_api.gpc_support,
            banner.banner_script,
            pages.privacy_center,
            pages.dashboard,
            pages.front_door,
            pages.demo_shop,
            reports.audience_sizes,
            reports.consent_rates,
            pages.static_files,
            health.healthz,
            health.readyz,
        ],
        dependencies={
            "ctx": Provide(lambda: ctx, sync_to_thread=False),
            "session": Provide(deps.provide_session),
            "site_row": Provide(deps.provide_site),
        },
        exception_handlers={HTTPException: on_http_exception, Exception: on_unexpected},
        after_exception=[deps.release_session],
        request_class=ApiRequest,
        before_send=[web.security_headers],
        lifespan=[lifespan],
        state=State({"ctx": ctx}),  # the raw ASGI pixel route reads it from here
        openapi_config=OpenAPIConfig(
            title="pixelgate",
            version="0.1.0",
            path="/schema",
            render_plugins=[web.SwaggerDocs()],
        ),
        debug=False,
    )
    _mounts_on_whole_segments(app)
    pixel.document_pixel(app.openapi_schema)
    openapi.document(app.openapi_schema)
    return app


def _mounts_on_whole_segments(app: Litestar) -> None:
    """litestar matches a mount's path as a bare prefix, so the pixel's "/p" would take
    "/privacy/{site}" too: the mounts' pattern is made to end at a path segment's end."""
    router = app.asgi_router
    mounts = sorted(router._mount_routes, key=len, reverse=True)  # longest first
    alternatives = "|".join(re.escape(path) for path in mounts)
    router._mount_paths_regex = re.compile(f"(?:{alternatives})(?=/|$)")


def serve_app() -> Front:
    """Entry point for granian's factory mode (RSGI): each worker reads the environment once."""
    app = Front(create_app(load_settings(), writer_process=True))
    # What start-up built lives as long as the process: keep it out of every collection.
    gc.freeze()
    return app
