"""Minimise page and referrer URLs before they are stored."""

from __future__ import annotations

import functools
import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from app.base.tables import is_storable

__all__ = ["page_utm", "referrer_host", "scrub_page", "scrub_text"]

_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|//")
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
_LONG_NUMBER = re.compile(r"[0-9]{6,}")
_HOST = re.compile(r"[\w.-]+|[0-9a-f:.]+")
# Characters left readable in a stored path; everything else is percent-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=~[]"
_PARTIAL_ESCAPE = re.compile(r"%[0-9A-Fa-f]?$")


def _decode(text: str) -> str:
    # Links that went through redirectors are often encoded more than once; decode until
    # stable so that an e-mail address cannot hide behind a second layer of escapes.
    for _ in range(3):
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def _mask(text: str) -> str:
    return _LONG_NUMBER.sub("[num]", _EMAIL.sub("[email]", _decode(text)))


# Pages, campaigns and referrers repeat from hit to hit: each is reduced once and remembered
# (the cache lives in memory only, like the hits it serves).
@functools.lru_cache(maxsize=4096)
def scrub_text(raw: str | None) -> str | None:
    """Campaign ids and utm values: ESPs like to put the recipient's address in them."""
    return _mask(raw).strip() or None if raw else None


def _split(raw: str) -> tuple[str, str] | None:
    """A page URL, path or message id as (path, query), or None if it cannot be parsed."""
    text = raw.strip()
    if _ABSOLUTE.match(text):
        try:
            parts = urlsplit(text)
        except ValueError:
            return None
        return parts.path or "/", parts.query
    # Not parsed as a URL so that a message id with a colon keeps its "scheme".
    path, _, query = text.partition("#")[0].partition("?")
    return path, query


@functools.lru_cache(maxsize=4096)
def scrub_page(raw: str, max_length: int = 512) -> str | None:
    """Reduce a page URL, path or message id to its path and utm_* parameters (SPEC 4.1): the
    rest of its query may identify the visitor. page_utm() gives the hit the same values."""
    split = _split(raw)
    if split is None:
        return None
    scrubbed = quote(_mask(split[0]).strip(), safe=_PATH_SAFE)
    utm = [
        (key, _mask(value))
        for key, value in parse_qsl(split[1], keep_blank_values=True)
        if key.lower().startswith("utm_")
    ]
    if utm:
        scrubbed += "?" + urlencode(utm, quote_via=quote, safe="[]")
    if not scrubbed:
        return None
    return _PARTIAL_ESCAPE.sub("", scrubbed[:max_length])


@functools.lru_cache(maxsize=4096)
def page_utm(raw: str, max_length: int = 128) -> tuple[tuple[str, str], ...]:
    """The utm_* parameters of a page URL, as (name in lower case, scrubbed value); the last
    of a name wins, as in a pixel's query. A value is cut to `max_length` (the page's
    visitor chose it, and the hit is worth more than its end), one that cannot be stored is
    left out."""
    split = _split(raw)
    found: dict[str, str] = {}
    for key, value in parse_qsl(split[1] if split else ""):
        name = key.lower()
        if name.startswith("utm_") and (text := scrub_text(value)) and is_storable(text):
            found[name] = text[:max_length]
    return tuple(found.items())


@functools.lru_cache(maxsize=4096)
def referrer_host(raw: str) -> str | None:
    """The lowercased host of an http(s) URL, or None."""
    try:
        parts = urlsplit(raw.strip())
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    host = (parts.hostname or "").rstrip(".")
    return host if len(host) <= 253 and _HOST.fullmatch(host) else None
