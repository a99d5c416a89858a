"""create_app(settings) -> Litestar: the only wiring file. Nothing happens at import time."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from app import health, pixel
from app.context import Context
from app.db import make_engine, make_sessionmaker, transaction, utcnow
from app.problems import on_http_exception, on_unexpected
from app.pseudonym import KeyRing
from app.ratelimit import RateLimiter
from app.settings import Settings, load_settings
from consent import api as consent_api
from consent.policy import load_policies
from consent.receipts import Signer, publish_key


def create_app(settings: Settings) -> Litestar:
    """Policies are validated here, so a bad one stops start-up before anything listens."""
    policies = load_policies(settings.policies_dir)
    keyring = KeyRing(settings.secret_key)
    engine = make_engine(settings.database_url)
    ctx = Context(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        keyring=keyring,
        policies=policies,
        signer=Signer(keyring),
        consent_limiter=RateLimiter(settings.consent_rate_limit),
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with transaction(ctx.sessions) as session:
            await publish_key(session, ctx.signer, utcnow())
        try:
            yield
        finally:
            await engine.dispose()

    return Litestar(
        route_handlers=[
            pixel.pixel,
            pixel.collect,
            pixel.debug,
            consent_api.consent_preflight,
            consent_api.subject_preflight,
            consent_api.give_consent,
            consent_api.read_consent,
            consent_api.consent_history,
            consent_api.withdraw_consent,
            consent_api.jwks,
            consent_api.policy_notice,
            consent_api.gpc_support,
            health.healthz,
            health.readyz,
        ],
        dependencies={"ctx": Provide(lambda: ctx, sync_to_thread=False)},
        exception_handlers={HTTPException: on_http_exception, Exception: on_unexpected},
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="pixelgate",
            version="0.1.0",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        debug=False,
    )


def serve_app() -> Litestar:
    """Entry point for granian's factory mode: each worker reads the environment once."""
    return create_app(load_settings())
