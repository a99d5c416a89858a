"""Signed pixel tokens (`t`): authenticated, bound to a site, carrying the pseudonym, not the id."""

import msgspec

from app.base.keys import KeyRing, seal, unseal


class PixelClaim(msgspec.Struct, array_like=True, frozen=True):
    site: str
    subject: str | None  # pseudonym
    kind: str
    campaign: str | None
    page: str | None


def sign_pixel(keyring: KeyRing, claim: PixelClaim) -> str:
    return seal(keyring, msgspec.msgpack.encode(claim), "site", claim.site, "pixel-token")


def read_pixel(keyring: KeyRing, site: str, token: str) -> PixelClaim | None:
    """The claim if the token is intact and was made for this site; None otherwise."""
    payload = unseal(keyring, token, "site", site, "pixel-token")
    if payload is None:
        return None
    try:
        claim = msgspec.msgpack.decode(payload, type=PixelClaim)
    except msgspec.DecodeError:
        return None
    return claim if claim.site == site else None
