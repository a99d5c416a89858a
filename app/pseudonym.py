"""Key derivation and pseudonyms. Raw identifiers come in here and only pseudonyms go out."""

import hashlib
import hmac
import ipaddress

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class KeyRing:
    """Derives every key from the master secret (HKDF-SHA256), once per label."""

    def __init__(self, master: bytes) -> None:
        self._master = master
        self._keys: dict[tuple[str, ...], bytes] = {}
        # Keyed HMACs ready to copy: a copy skips the key schedule, a third of each HMAC.
        self._macs: dict[tuple[str, ...], hmac.HMAC] = {}

    def key(self, *labels: str) -> bytes:
        derived = self._keys.get(labels)
        if derived is None:
            info = "pixelgate/" + "/".join(labels)
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode())
            derived = self._keys[labels] = hkdf.derive(self._master)
        return derived

    def mac(self, data: bytes, *labels: str) -> bytes:
        keyed = self._macs.get(labels)
        if keyed is None:
            keyed = self._macs[labels] = hmac.new(self.key(*labels), digestmod=hashlib.sha256)
        one = keyed.copy()
        one.update(data)
        return one.digest()

    def pseudonym(self, site: str, identifier: str) -> str:
        """HMAC-SHA256 under the site's own key: one person has unlinkable pseudonyms per site."""
        normalised = normalise_identifier(identifier).encode()
        return self.mac(normalised, "site", site, "pseudonym").hex()


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
