"""A fixed-window limit per client, in memory and per process: enough to blunt a flood on
the public API, not a quota."""

import functools
import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from litestar import Request

from app.http.problems import Problem

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _within(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(request: Request[Any, Any, Any], trusted_proxies: tuple[str, ...]) -> str | None:
    """The address of whoever sent the request: the peer's, unless the peer is a trusted proxy;
    then X-Forwarded-For read from the right, up to the first hop that is not a trusted proxy
    (anything left of it could have been written by the client itself)."""
    peer = request.client.host if request.client else None
    trusted = _networks(trusted_proxies)
    if peer is None or not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("x-forwarded-for", [])).split(",")]
    client = peer
    for hop in reversed([h for h in hops if h]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # not an address: nothing further left can be believed
        client = hop
        if not _within(hop, trusted):
            break
    return client


def is_allowed(host: str | None, cidrs: tuple[str, ...]) -> bool:
    """Whether an address lies within any of these networks."""
    return host is not None and _within(host, _networks(cidrs))


def client_of(request: Request[Any, Any, Any], trusted_proxies: tuple[str, ...] = ()) -> str:
    """The client's address for rate limits; IPv6 by its /64, which one host can rotate within
    at will."""
    host = client_address(request, trusted_proxies) or "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self.clock = clock
        # Clients are kept as keyed hashes under a per-process key, never as raw addresses or
        # tokens.
        self._key = secrets.token_bytes(32)
        self._window = -1
        self._counts: dict[bytes, int] = {}

    def allow(self, scope: str, client: str, now: float) -> bool:
        """Counts this request; whether it is within the limit. `client` is kept only as a
        keyed hash: it may be an address or a token."""
        window = int(now // 60)
        if window != self._window:
            self._window, self._counts = window, {}
        who = hmac.digest(self._key, f"{scope}|{client}".encode(), hashlib.sha256)[:16]
        count = self._counts.get(who, 0) + 1
        self._counts[who] = count
        return count <= self.per_minute

    def retry_after(self, now: float) -> int:
        """Whole seconds until the current window ends."""
        return max(1, math.ceil(60 - now % 60))

    def check(self, scope: str, client: str, headers: Mapping[str, str] | None = None) -> None:
        """A 429 problem with Retry-After (and `headers`, e.g. CORS) once over the limit."""
        now = self.clock()
        if not self.allow(scope, client, now):
            wait = self.retry_after(now)
            raise Problem(
                429,
                f"too many requests; try again in {wait} seconds",
                headers={**(headers or {}), "Retry-After": str(wait)},
            )
