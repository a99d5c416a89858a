"""Keys: derivation, pseudonyms and sealed tokens.

Raw identifiers come in here and only pseudonyms go out. Tokens we hand out and take back are
a payload and its truncated HMAC, both base64url."""

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SHA256_BLOCK = 64  # bytes: HMAC pads a key to the hash's block size


class KeyRing:
    """Derives every key from the master secret (HKDF-SHA256), once per label."""

    def __init__(self, master: bytes) -> None:
        self._master = master
        self._keys: dict[tuple[str, ...], bytes] = {}
        self._pads: dict[tuple[str, ...], tuple[hashlib._Hash, hashlib._Hash]] = {}

    def key(self, *labels: str) -> bytes:
        derived = self._keys.get(labels)
        if derived is None:
            info = "pixelgate/" + "/".join(labels)
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode())
            derived = self._keys[labels] = hkdf.derive(self._master)
        return derived

    def mac(self, data: bytes, *labels: str) -> bytes:
        """HMAC-SHA256 (RFC 2104) under the labels' key. The hmac module takes several Python
        calls a message, and the writer makes one a hit: this keeps the two keyed SHA-256
        states (the key's inner and outer pads) and copies them instead."""
        pads = self._pads.get(labels)
        if pads is None:
            key = self.key(*labels).ljust(SHA256_BLOCK, b"\0")
            pads = self._pads[labels] = (
                hashlib.sha256(bytes(b ^ 0x36 for b in key)),
                hashlib.sha256(bytes(b ^ 0x5C for b in key)),
            )
        inner, outer = pads[0].copy(), pads[1].copy()
        inner.update(data)
        outer.update(inner.digest())
        return outer.digest()

    def pseudonym(self, site: str, identifier: str) -> str:
        """HMAC-SHA256 under the site's own key: one person has unlinkable pseudonyms per site."""
        normalised = normalise_identifier(identifier).encode()
        return self.mac(normalised, "site", site, "pseudonym").hex()


def audit_hash(keyring: KeyRing, pseudonym: str) -> str:
    """Keyed apart from the pseudonym itself: the audit trail cannot be joined back to data."""
    return keyring.mac(pseudonym.encode(), "dsar-audit").hex()


def normalise_identifier(raw: str) -> str:
    """E-mail addresses are case-insensitive in practice; other ids are taken as given."""
    value = raw.strip()
    return value.lower() if "@" in value else value


def truncate_ip(raw: str | None) -> str | None:
    """IPv4 to its /24, IPv6 to its /48; None for anything that is not an address."""
    if not raw:
        return None
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


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
