"""Reduce a raw user agent to coarse families; the raw string itself is never stored."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from ua_parser import (
    BasicResolver,
    BestAvailableResolver,
    Domain,
    Resolver,
    load_builtins,
    load_lazy_builtins,
)

__all__ = ["Agent", "classify"]


class Agent(msgspec.Struct, frozen=True):
    device: str  # "desktop" | "mobile" | "tablet" | "bot" | "other"
    browser: str
    os: str
    is_bot: bool
    mail_proxy: bool


# Mail image proxies fetch the pixel when the recipient opens the message, so a hit is a
# real open; crawler-user-agents lists them as crawlers, hence they are recognised first.
_GMAIL_PROXY = "GoogleImageProxy"
_YAHOO_PROXY = "YahooMailProxy"
# Apple Mail Privacy Protection fetches with nothing but this generic token.
_APPLE_MPP = "Mozilla/5.0"

_DESKTOP_OS = frozenset(
    {
        "Windows",
        "Mac OS X",
        "Linux",
        "Ubuntu",
        "Debian",
        "Fedora",
        "Red Hat",
        "SUSE",
        "openSUSE",
        "Arch Linux",
        "Linux Mint",
        "Chrome OS",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
    }
)
_MOBILE_DEVICES = frozenset({"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone"})
_TABLET_DEVICES = frozenset({"iPad", "Generic Tablet", "Kindle"})

# One unit of a pattern's literal prefix: a plain character or an escaped punctuation mark.
_LITERAL_UNIT = re.compile(r"[A-Za-z0-9 _\-,;:'\"!@#%&=<>/~]|\\[^A-Za-z0-9]")
_QUANTIFIERS = frozenset("?*+{")


def _top_level(pattern: str) -> Iterator[tuple[int, str]]:
    """Yield the position and character of each structural character at group depth zero."""
    depth, in_set, i = 0, False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 1
        elif in_set:
            in_set = char != "]"
        elif char == "[":
            in_set = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                yield i, char
        elif char == "|" and depth == 0:
            yield i, char
        i += 1


def _expand(pattern: str) -> list[str]:
    """Rewrite a pattern as simpler ones matching the same strings, with literal starts."""
    bars = [i for i, char in _top_level(pattern) if char == "|"]
    if bars:
        bounds = zip([-1, *bars], [*bars, len(pattern)], strict=True)
        return [p for start, end in bounds for p in _expand(pattern[start + 1 : end])]
    if pattern.startswith("["):
        end = pattern.find("]")
        rest = pattern[end + 1 :]
        if end > 1 and pattern[1:end].isalnum() and rest[:1] not in _QUANTIFIERS:
            return [p for char in pattern[1:end] for p in _expand(char + rest)]
    if pattern.startswith("(") and not pattern.startswith("(?"):
        end = next(i for i, char in _top_level(pattern) if char == ")")
        rest = pattern[end + 1 :]
        if rest[:1] not in _QUANTIFIERS:
            return [p for alt in _expand(pattern[1:end]) for p in _expand(alt + rest)]
    return [pattern]


def _literal_prefix(pattern: str) -> tuple[list[str], str]:
    """Split a pattern into the literal characters it starts with and the regex remainder."""
    chars: list[str] = []
    pos = 0
    while unit := _LITERAL_UNIT.match(pattern, pos):
        if pattern[unit.end() : unit.end() + 1] in _QUANTIFIERS:
            break
        chars.append(unit.group()[-1])
        pos = unit.end()
    return chars, pattern[pos:]


def _trie_regex(patterns: Iterable[str]) -> str:
    trie: dict[str, Any] = {}
    for pattern in patterns:
        chars, rest = _literal_prefix(pattern)
        node = trie
        for char in chars:
            node = node.setdefault(char, {})
        node.setdefault("", []).append(rest)
    return _emit(trie)


def _emit(node: dict[str, Any]) -> str:
    remainders: list[str] = node.get("", [])
    if "" in remainders:  # the prefix alone already matches
        return ""
    branches = [re.escape(char) + _emit(child) for char, child in node.items() if char]
    branches += [f"(?:{rest})" for rest in remainders]
    if not branches:
        return "(?!)"
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


@functools.cache
def _crawler_regex() -> re.Pattern[str]:
    # A flat alternation of ~1,500 patterns costs hundreds of microseconds per search, since
    # every branch is tried at every position. Merging the literal starts of the patterns
    # into a trie lets the engine drop nearly all of them on their first character.
    # Imported here because the package parses its JSON list at import time.
    import crawleruseragents

    patterns = [
        p for e in crawleruseragents.CRAWLER_USER_AGENTS_DATA for p in _expand(e["pattern"])
    ]
    anchored = _trie_regex(p[1:] for p in patterns if p.startswith("^"))
    floating = _trie_regex(p for p in patterns if not p.startswith("^"))
    return re.compile(f"^{anchored}|{floating}")


@functools.cache
def _resolver() -> Resolver:
    # classify() has its own cache, so the resolver is used bare rather than behind
    # ua-parser's caching wrapper; lazy matchers suit the compiled (Rust / re2) backends.
    if BestAvailableResolver is BasicResolver:
        return BasicResolver(load_builtins())
    return BestAvailableResolver(load_lazy_builtins())


def _device(user_agent: str, os_family: str, device_family: str) -> str:
    if device_family in _TABLET_DEVICES:
        return "tablet"
    if device_family in _MOBILE_DEVICES:
        return "mobile"
    if os_family == "Android":
        # Android phones advertise "Mobile"; tablets leave it out.
        return "mobile" if "Mobile" in user_agent else "tablet"
    if "Mobi" in user_agent:  # the token every mainstream mobile browser sends
        return "mobile"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"


@functools.lru_cache(maxsize=4096)
def classify(user_agent: str) -> Agent:
    """Coarse device, browser and OS families of a user agent, and whether to record it."""
    ua = user_agent.strip()
    if _GMAIL_PROXY in ua:
        return Agent("other", _GMAIL_PROXY, "Other", is_bot=False, mail_proxy=True)
    if _YAHOO_PROXY in ua:
        return Agent("other", _YAHOO_PROXY, "Other", is_bot=False, mail_proxy=True)
    if ua == _APPLE_MPP:
        return Agent("other", "Other", "Other", is_bot=False, mail_proxy=True)
    if not ua:
        return Agent("bot", "Other", "Other", is_bot=True, mail_proxy=False)

    parsed = _resolver()(ua, Domain.ALL).complete()
    browser = parsed.user_agent.family if parsed.user_agent else "Other"
    os_family = parsed.os.family if parsed.os else "Other"
    if _crawler_regex().search(ua):
        return Agent("bot", browser, os_family, is_bot=True, mail_proxy=False)
    device_family = parsed.device.family if parsed.device else "Other"
    return Agent(
        _device(ua, os_family, device_family), browser, os_family, is_bot=False, mail_proxy=False
    )
