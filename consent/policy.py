"""Policies: TOML files in policies/, decoded into Structs and validated at start-up."""

import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from app.base.event_fields import ATTRIBUTION_FIELDS
from app.base.sites import JURISDICTION

Default = Literal["granted", "denied"]
T = TypeVar("T")
PURPOSE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
KIND_NAME = re.compile(r"^([a-z][a-z0-9_]{0,31}|\*)$")
MAX_ATTRIBUTION_DAYS = 366  # reports.attribution_window_days at most: a year and a day


class PolicyError(Exception):
    """A policy that fails validation; the message names the file, the field and why."""


class Purpose(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    default: Default
    # What the purpose covers, in the notice's words: access exports quote it (GDPR Art. 15).
    # Optional, so that a file written before the field existed still loads.
    description: str = ""
    consent_ttl_days: int = 395
    retention_days: int = 395
    sale_or_share: bool = False


class SignalRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which purposes each privacy signal denies."""

    gpc: list[str] = []
    dnt: list[str] = []


class TCF(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    vendor_id: int = 0
    purposes: dict[str, list[int]] = {}


class DSAR(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_days: int | None = None
    export_ttl_days: int = 7


class Reports(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_subjects: int = 1
    # A consenting subject's visit or conversion this many days after their click is credited
    # to that click's campaign and influencer (last touch).
    attribution_window_days: int = 30


class PolicyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    version: str
    purposes: dict[str, Purpose]
    kinds: dict[str, list[str]]
    notice: str | None = None
    # The jurisdiction the policy is written for: a new site's default unless told otherwise.
    # Optional, so that a file written before the field existed still loads.
    jurisdiction: str = "eu"
    reconsent_on_change: bool = False
    require_signed_pixels: list[str] = []
    anonymous_counting: bool = False
    # With anonymous_counting: the kinds counted without consent, each with the attribution
    # fields it keeps (a tracked link's campaign and utm_source, say). Empty: every kind,
    # keeping none.
    anonymous_kinds: dict[str, list[str]] = {}
    # How long the consent ledger of a person who withdrew is kept as proof, then purged.
    consent_proof_days: int = 1095
    signals: SignalRules = SignalRules()
    tcf: TCF | None = None
    dsar: DSAR = DSAR()
    reports: Reports = Reports()
    jurisdictions: dict[str, dict[str, Default]] = {}


class Policy(msgspec.Struct, frozen=True):
    """A validated policy; its identity is the declared version plus the file's SHA-256."""

    file: PolicyFile
    sha256: str
    notice_text: str

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def version(self) -> str:
        return self.file.version

    def purposes_for(self, kind: str) -> list[str]:
        kinds = self.file.kinds
        return kinds[kind] if kind in kinds else kinds.get("*", [])

    def default_for(self, purpose: str, jurisdiction: str | None) -> Default:
        override = self.file.jurisdictions.get(jurisdiction or "", {})
        return override.get(purpose, self.file.purposes[purpose].default)

    def gpc_denies(self) -> set[str]:
        """GPC always denies every sale/share purpose, whatever the policy lists."""
        listed = set(self.file.signals.gpc)
        return listed | {name for name, p in self.file.purposes.items() if p.sale_or_share}

    def retention_days(self, kind: str) -> int:
        """Raw events are kept for the longest retention of the purposes their kind serves."""
        purposes = self.purposes_for(kind) or list(self.file.purposes)
        return max(self.file.purposes[p].retention_days for p in purposes)

    def counted_anonymously(self, kind: str) -> list[str] | None:
        """The attribution fields a hit of this kind keeps when counted without a subject and
        without consent; None when it may not be counted that way."""
        if not self.file.anonymous_counting:
            return None
        if not self.file.anonymous_kinds:
            return []
        return self.file.anonymous_kinds.get(kind)

    def sale_or_share(self) -> list[str]:
        return sorted(name for name, p in self.file.purposes.items() if p.sale_or_share)


def _check(path: Path, policy: PolicyFile) -> None:
    def fail(field: str, why: str) -> PolicyError:
        return PolicyError(f"{path}: {field}: {why}")

    if policy.name != path.stem:
        raise fail("name", f"{policy.name!r} must match the file name {path.stem!r}")
    if not policy.version.strip():
        raise fail("version", "must not be empty")
    if not JURISDICTION.match(policy.jurisdiction):
        raise fail("jurisdiction", "must look like eu, us or us-ca (lowercase)")
    if not policy.purposes:
        raise fail("purposes", "at least one purpose is required")
    known = set(policy.purposes)
    for name, purpose in policy.purposes.items():
        if not PURPOSE_NAME.match(name):
            raise fail(f"purposes.{name}", "purpose names are [a-z][a-z0-9_]{0,31}")
        for field in ("consent_ttl_days", "retention_days"):
            if getattr(purpose, field) < 1:
                raise fail(f"purposes.{name}.{field}", "must be at least 1")
        blank = purpose.description and not purpose.description.strip()
        if blank or len(purpose.description) > 500:
            raise fail(f"purposes.{name}.description", "must not be blank; at most 500 characters")

    def check_purposes(field: str, names: Iterable[str]) -> None:
        for purpose in names:
            if purpose not in known:
                raise fail(field, f"unknown purpose {purpose!r}")

    for kind, purposes in policy.kinds.items():
        if not KIND_NAME.match(kind):
            raise fail(f"kinds.{kind}", "kind names are [a-z][a-z0-9_]{0,31} or '*'")
        if not purposes:
            raise fail(f"kinds.{kind}", "a kind needs at least one purpose")
        check_purposes(f"kinds.{kind}", purposes)
    check_purposes("signals.gpc", policy.signals.gpc)
    check_purposes("signals.dnt", policy.signals.dnt)
    for region, overrides in policy.jurisdictions.items():
        if not JURISDICTION.match(region):
            raise fail(f"jurisdictions.{region}", "must look like eu, us or us-ca (lowercase)")
        check_purposes(f"jurisdictions.{region}", overrides)
    if policy.tcf is not None:
        check_purposes("tcf.purposes", policy.tcf.purposes)
        for tcf_purpose, ids in policy.tcf.purposes.items():
            if not ids or any(not 1 <= i <= 11 for i in ids):
                raise fail(f"tcf.purposes.{tcf_purpose}", "TCF purpose ids are 1..11")
    if policy.tcf is not None and policy.tcf.vendor_id < 0:
        raise fail("tcf.vendor_id", "must be 0 (no vendor check) or a GVL vendor id")
    for kind in policy.require_signed_pixels:
        if not KIND_NAME.match(kind) or kind == "*":
            raise fail("require_signed_pixels", f"{kind!r} is not a kind name")
    for kind, fields in policy.anonymous_kinds.items():
        if not KIND_NAME.match(kind) or kind == "*":
            raise fail(f"anonymous_kinds.{kind}", "kind names are [a-z][a-z0-9_]{0,31}")
        for field in fields:
            if field not in ATTRIBUTION_FIELDS:
                raise fail(f"anonymous_kinds.{kind}", f"{field!r} is not an attribution field")
    if policy.anonymous_kinds and not policy.anonymous_counting:
        raise fail("anonymous_kinds", "needs anonymous_counting = true")
    if policy.consent_proof_days < 1:
        raise fail("consent_proof_days", "must be at least 1")
    if policy.dsar.export_ttl_days < 1:
        raise fail("dsar.export_ttl_days", "must be at least 1")
    if policy.dsar.max_days is not None and policy.dsar.max_days < 1:
        raise fail("dsar.max_days", "must be at least 1")
    if policy.reports.min_subjects < 1:
        raise fail("reports.min_subjects", "must be at least 1")
    if not 1 <= policy.reports.attribution_window_days <= MAX_ATTRIBUTION_DAYS:
        raise fail("reports.attribution_window_days", "must be from 1 to 366")


def _convert(path: Path, value: object, type_: type[T], where: str) -> T:
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.default`"; turn it into file: field: why
        why, _, rest = str(exc).partition(" - at `$")
        field = (where + rest.rstrip("`")).lstrip(".") or "(top level)"
        raise PolicyError(f"{path}: {field}: {why}") from None


NAMED_ENTRIES: list[tuple[tuple[str, ...], object]] = [
    (("purposes", "*"), Purpose),
    (("kinds", "*"), list[str]),
    (("anonymous_kinds", "*"), list[str]),
    (("jurisdictions", "*", "*"), Default),
    (("tcf", "purposes", "*"), list[int]),
]


def _named_entries(document: object) -> Iterator[tuple[str, object, Any]]:
    """(dotted field, value, type) for every entry of the tables keyed by name; "*" is a key."""
    for pattern, entry_type in NAMED_ENTRIES:
        level: list[tuple[str, object]] = [("", document)]
        for step in pattern:
            level = [
                (f"{where}.{key}".lstrip("."), value)
                for where, table in level
                if isinstance(table, dict)
                for key, value in table.items()
                if step in ("*", key)
            ]
        for where, value in level:
            yield where, value, entry_type


def load_policy(path: Path) -> Policy:
    raw = path.read_bytes()
    try:
        document = msgspec.toml.decode(raw)
    except msgspec.DecodeError as exc:
        raise PolicyError(f"{path}: (file): not valid TOML: {exc}") from None
    # Tables keyed by name are checked entry by entry, so an error can name the entry.
    for where, value, entry_type in _named_entries(document):
        _convert(path, value, entry_type, where)
    decoded = _convert(path, document, PolicyFile, "")
    _check(path, decoded)
    notice_text = ""
    if decoded.notice:
        notice_path = path.parent / decoded.notice
        if not notice_path.is_file():
            raise PolicyError(f"{path}: notice: file {notice_path} not found")
        notice_text = notice_path.read_text()
    return Policy(file=decoded, sha256=hashlib.sha256(raw).hexdigest(), notice_text=notice_text)


def load_policies(directory: Path) -> dict[str, Policy]:
    """Every *.toml in the directory, by name; the first invalid one stops start-up."""
    policies = {}
    for path in sorted(directory.glob("*.toml")):
        policy = load_policy(path)
        policies[policy.name] = policy
    if not policies:
        raise PolicyError(f"{directory}: no policy files (*.toml) found")
    return policies


def jurisdictions(policies: dict[str, "Policy"]) -> dict[str, str]:
    """Each policy's name with the jurisdiction it is written for, as sites are created with."""
    return {name: policy.file.jurisdiction for name, policy in policies.items()}
