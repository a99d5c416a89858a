"""Settings from the environment, read once at start-up and passed explicitly."""

import base64
import binascii
import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/pixelgate.db"
MIN_SECRET_BYTES = 32
LOOPBACK = ("127.0.0.0/8", "::1/128")


class ConfigError(Exception):
    """A bad setting; the message is one line naming the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: bytes
    policies_dir: Path = Path("policies")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    jobs: bool = True
    region_header: str | None = None
    # The base of every URL pixelgate writes; never the Host header. Empty: http://host:port.
    public_url: str = ""
    # Peers whose X-Forwarded-For is believed (CIDRs); from anyone else it is ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Who may read /metrics: these networks, or a holder of metrics_token.
    metrics_allow: tuple[str, ...] = LOOPBACK
    metrics_token: str | None = None
    spool_dir: Path = Path("data/spool")  # events kept here while the database is down
    subject_token_days: int = 400  # how long a subject token opens the person's data
    # Not in the environment contract: tests and operators tune it by building Settings.
    consent_rate_limit: int = 60  # public consent posts per client per minute
    write_retry_seconds: float = 1.0  # how long the writer waits before retrying the database

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def base_url(self) -> str:
        """public_url without a trailing slash, or the listen address."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside {low}..{high}")
    return value


def _secret(env: Mapping[str, str], data_dir: Path) -> bytes:
    raw = (env.get("PIXELGATE_SECRET_KEY") or "").strip()
    if raw:
        return _decode_secret("PIXELGATE_SECRET_KEY", raw)
    path = data_dir / "secret.key"
    if path.exists():
        return _decode_secret(str(path), path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    encoded = base64.b64encode(secrets.token_bytes(MIN_SECRET_BYTES)).decode()
    # O_EXCL: two processes starting at once must not each write a different secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _decode_secret(str(path), path.read_text().strip())
    with os.fdopen(fd, "w") as out:
        out.write(encoded + "\n")
    return base64.b64decode(encoded)


def _decode_secret(name: str, raw: str) -> bytes:
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name}: not valid base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(f"{name}: must decode to at least {MIN_SECRET_BYTES} bytes")
    return key


def _public_url(env: Mapping[str, str]) -> str:
    raw = (env.get("PIXELGATE_PUBLIC_URL") or "").strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or not raw.isascii()
        or any(c.isspace() or ord(c) < 32 for c in raw)
    ):
        raise ConfigError(
            f"PIXELGATE_PUBLIC_URL: {raw!r} must be an http(s) URL with a host, "
            "no query and no fragment"
        )
    return raw.rstrip("/")


def _networks(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128), in canonical form."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    networks = []
    for part in raw.split(","):
        if not part.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: {part.strip()!r} is not an IP network (CIDR)") from None
    return tuple(networks)


def _database_url(env: Mapping[str, str]) -> str:
    url = env.get("PIXELGATE_DATABASE_URL") or DEFAULT_DATABASE_URL
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            "PIXELGATE_DATABASE_URL: must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    return url


def load_settings(env: Mapping[str, str] | None = None, data_dir: Path = Path("data")) -> Settings:
    """Read the environment once; raise ConfigError with one line naming the bad variable."""
    env = os.environ if env is None else env
    database_url = _database_url(env)
    jobs = (env.get("PIXELGATE_JOBS") or "on").strip().lower()
    if jobs not in ("on", "off"):
        raise ConfigError(f"PIXELGATE_JOBS: {jobs!r} must be 'on' or 'off'")
    policies_dir = Path(env.get("PIXELGATE_POLICIES_DIR") or "policies")
    if not policies_dir.is_dir():
        raise ConfigError(f"PIXELGATE_POLICIES_DIR: {policies_dir} is not a directory")
    host = env.get("PIXELGATE_HOST") or "127.0.0.1"
    port = _int(env, "PIXELGATE_PORT", 8000, 1, 65535)
    workers = _int(env, "PIXELGATE_WORKERS", 1, 1, 256)
    public_url = _public_url(env)
    trusted_proxies = _networks(env, "PIXELGATE_TRUSTED_PROXIES", ())
    metrics_allow = _networks(env, "PIXELGATE_METRICS_ALLOW", LOOPBACK)
    spool_dir = Path(env.get("PIXELGATE_SPOOL_DIR") or data_dir / "spool")
    subject_token_days = _int(env, "PIXELGATE_SUBJECT_TOKEN_DAYS", 400, 1, 3650)
    if database_url.startswith("sqlite") and workers > 1:
        raise ConfigError(
            "PIXELGATE_WORKERS: SQLite allows one worker; use PostgreSQL to scale out"
        )
    # Last, so that a bad setting above leaves nothing written behind.
    settings = Settings(
        database_url=database_url,
        secret_key=_secret(env, data_dir),
        policies_dir=policies_dir,
        host=host,
        port=port,
        workers=workers,
        jobs=jobs == "on",
        region_header=env.get("PIXELGATE_REGION_HEADER") or None,
        public_url=public_url,
        trusted_proxies=trusted_proxies,
        metrics_allow=metrics_allow,
        metrics_token=(env.get("PIXELGATE_METRICS_TOKEN") or "").strip() or None,
        spool_dir=spool_dir,
        subject_token_days=subject_token_days,
    )
    return settings
