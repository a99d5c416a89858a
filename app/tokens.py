"""Tokens we hand out and take back: a payload and its truncated HMAC, both base64url."""

import base64
import binascii
import hmac
import re

from app.pseudonym import KeyRing

MAC_BYTES = 16
BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """The bytes of the one spelling b64url() gives them; ValueError for any other text.

    The standard decoder skips characters outside the alphabet and ignores the unused bits of
    the last character, so one token would have many spellings."""
    if not BASE64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(data) != text:
        raise ValueError("not the canonical spelling")
    return data


def seal(keyring: KeyRing, payload: bytes, *labels: str) -> str:
    return b64url(payload) + "." + b64url(keyring.mac(payload, *labels)[:MAC_BYTES])


def unseal(keyring: KeyRing, token: str, *labels: str) -> bytes | None:
    """The payload if the token was sealed under the same labels; None otherwise."""
    head, _, tail = token.partition(".")
    try:
        payload, mac = unb64url(head), unb64url(tail)
    except (binascii.Error, ValueError):
        return None
    good = hmac.compare_digest(mac, keyring.mac(payload, *labels)[:MAC_BYTES])
    return payload if good else None
