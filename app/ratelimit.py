"""A fixed-window limit per client, in memory: enough to blunt a flood on the public API."""

import hashlib
import hmac
import secrets


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        # Clients are kept as keyed hashes under a per-process key, never as raw addresses.
        self._key = secrets.token_bytes(32)
        self._window = -1
        self._counts: dict[bytes, int] = {}

    def allow(self, client: str, now: float) -> bool:
        window = int(now // 60)
        if window != self._window:
            self._window, self._counts = window, {}
        who = hmac.digest(self._key, client.encode(), hashlib.sha256)[:16]
        count = self._counts.get(who, 0) + 1
        self._counts[who] = count
        return count <= self.per_minute
