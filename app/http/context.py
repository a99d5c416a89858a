"""What every request handler shares for the life of the process."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.base.keys import KeyRing
from app.base.metrics import Metrics
from app.base.settings import Settings
from app.base.sites import SiteDirectory
from app.hits.queue import Ingest
from app.http.ratelimit import RateLimiter
from consent.cache import ConsentCache
from consent.policy import Policy
from consent.receipts import Signer


@dataclass(frozen=True)
class Context:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    policies: dict[str, Policy]
    signer: Signer
    consent_limiter: RateLimiter
    sites: SiteDirectory
    consent: ConsentCache
    ingest: Ingest
    metrics: Metrics
