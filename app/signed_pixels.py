"""Signed pixel tokens (`t`): authenticated, bound to a site, carrying the pseudonym, not the id."""

import base64
import binascii
import hmac

import msgspec

from app.pseudonym import KeyRing


class PixelClaim(msgspec.Struct, array_like=True, frozen=True):
    site: str
    subject: str | None  # pseudonym
    kind: str
    campaign: str | None
    page: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signature(keyring: KeyRing, site: str, payload: bytes) -> bytes:
    return keyring.mac(payload, "site", site, "pixel-token")[:16]


def sign_pixel(keyring: KeyRing, claim: PixelClaim) -> str:
    payload = msgspec.msgpack.encode(claim)
    return _b64(payload) + "." + _b64(_signature(keyring, claim.site, payload))


def read_pixel(keyring: KeyRing, site: str, token: str) -> PixelClaim | None:
    """The claim if the token is intact and was made for this site; None otherwise."""
    head, _, sig = token.partition(".")
    try:
        payload = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        given = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(given, _signature(keyring, site, payload)):
        return None
    try:
        claim = msgspec.msgpack.decode(payload, type=PixelClaim)
    except msgspec.DecodeError:
        return None
    return claim if claim.site == site else None
