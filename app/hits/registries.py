"""The consent registry each hit met when it arrived, rebuilt where it has changed since."""

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.base.keys import KeyRing, audit_hash
from app.hits.event import EventRow, Pending
from consent import store
from consent.decide import Record

Key = tuple[str, str]  # (site, pseudonym)
# Whether a subject's consent may have changed at or after a moment (a hit's arrival).
MayHaveChanged = Callable[[Key, datetime], bool]


async def registries_met(
    session: AsyncSession,
    keyring: KeyRing,
    batch: Sequence[Pending],
    current: dict[Key, dict[str, Record]],
    may_have_changed: MayHaveChanged,
) -> list[dict[str, Record] | None]:
    """The registry each hit of `batch` met when it arrived, for settle(); None for a hit
    whose subject has been erased since. `current`: the registries now (the cache's).

    Most hits met the registry as it is now. One whose subject's registry changed after it
    arrived gets the registry as it was then, rebuilt from the ledger. An erasure leaves
    the registry empty (or newer than the hit, if consent was given again since), so the
    erasures' audit record is asked only for a hit whose registry is newer, or empty while
    `may_have_changed` (the cache heard of a change since the hit, or knows nothing).
    Hits that need neither cost no query."""
    past: set[store.Moment] = set()
    erasable: list[EventRow] = []
    for pending in batch:
        event = pending.event
        if event.subject is None:
            continue
        key = (event.site, event.subject)
        registry = current.get(key)
        changed = False
        for record in registry.values() if registry else ():
            if record.updated_at is not None and record.updated_at > event.occurred_at:
                changed = True
                break
        if changed:
            past.add((event.site, event.subject, event.occurred_at))
        if changed or (not registry and may_have_changed(key, event.occurred_at)):
            erasable.append(event)
    erased = await erased_since(session, keyring, erasable) if erasable else set()
    rebuilt = await store.registries_at(session, past) if past else {}
    met: list[dict[str, Record] | None] = []
    for pending in batch:
        event = pending.event
        if event.subject is None:
            met.append({})
        elif event.id in erased:
            met.append(None)
        else:
            moment = (event.site, event.subject, event.occurred_at)
            found = rebuilt.get(moment)
            met.append(found if found is not None else current.get(moment[:2], {}))
    return met


async def erased_since(
    session: AsyncSession, keyring: KeyRing, events: Iterable[EventRow]
) -> set[uuid.UUID]:
    """The ids of the events whose subject has been erased at or after the event: what an
    erasure leaves is its audit record, which names the subject by a keyed hash."""
    by_site: dict[str, list[tuple[str, EventRow]]] = {}
    for event in events:
        if event.subject is not None:
            by_site.setdefault(event.site, []).append((audit_hash(keyring, event.subject), event))
    found: set[uuid.UUID] = set()
    for site, hashed in by_site.items():
        erased = await store.erased_at(session, site, {h for h, _ in hashed})
        found.update(e.id for h, e in hashed if h in erased and erased[h] >= e.occurred_at)
    return found
