"""A fixed-window limit per client, in memory and per process: enough to blunt a flood on
the public API, not a quota."""

import hashlib
import hmac
import ipaddress
import secrets
from typing import Any

from litestar import Request


def client_of(request: Request[Any, Any, Any]) -> str:
    """The client's address; IPv6 by its /64, which one host can rotate within at will."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        # Clients are kept as keyed hashes under a per-process key, never as raw addresses.
        self._key = secrets.token_bytes(32)
        self._window = -1
        self._counts: dict[bytes, int] = {}

    def allow(self, scope: str, client: str, now: float) -> bool:
        window = int(now // 60)
        if window != self._window:
            self._window, self._counts = window, {}
        who = hmac.digest(self._key, f"{scope}|{client}".encode(), hashlib.sha256)[:16]
        count = self._counts.get(who, 0) + 1
        self._counts[who] = count
        return count <= self.per_minute
