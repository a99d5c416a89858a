"""The shapes memo: what hits of one shape share, read and reduced once."""

from collections import OrderedDict
from datetime import datetime

import msgspec

from app.base.keys import KeyRing
from app.base.sites import SiteOut
from app.hits.arrival import Arrival, HitHeaders, Said, parse_query, read_hit, said_by
from app.hits.event import Pending
from app.hits.steps import Dropped, Reason, check_subject, new_event_id, prepare_at_site
from consent.policy import Policy


class Shapes:
    """What hits of one shape share, read once.

    Most hits repeat an earlier one but for who sent it and when: the opens of a newsletter
    (one message id and campaign, fetched by a handful of mail proxies), the views of a
    popular page from the common browsers. A hit's shape is the hit without its subject:
    what the rest of its query (or values) and its headers say. Reading, checking it,
    classifying its user agent, reading its signals and reducing its fields are done once a
    shape and kept, and each hit adds its pseudonym, id and time. The keys hold raw values
    other than the subject, in memory only, like the hits themselves."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        # An OrderedDict, whose oldest entry is dropped in constant time (a dict's first key,
        # after many deletions, is found by scanning past them).
        self._shapes: OrderedDict[tuple[str, str, str, Said, HitHeaders], Pending | Reason]
        self._shapes = OrderedDict()

    def prepare(
        self,
        keyring: KeyRing,
        site: SiteOut,
        policy: Policy,
        arrival: Arrival,
        region_header: str | None,
        now: datetime,
    ) -> Pending:
        """prepare_at_site() of the hit that came as `arrival`, at `site`; raises Dropped."""
        subject, said = said_by(arrival)
        key = (site.slug, site.policy, site.jurisdiction, said, arrival.headers)
        shared = self._shapes.get(key)
        if shared is None:
            values = parse_query(said) if isinstance(said, str) else dict(said)
            shape = read_hit(site.slug, values, arrival.headers, region_header)
            if shape.token:
                # A signed pixel names its own subject (any `u` is ignored) and is one of a kind.
                return prepare_at_site(keyring, site, policy, shape, now)
            try:
                shared = prepare_at_site(keyring, site, policy, shape, now)
            except Dropped as exc:
                shared = exc.reason
            if len(self._shapes) >= self._max:
                self._shapes.popitem(last=False)  # the oldest
            self._shapes[key] = shared
        check_subject(subject)  # as valid_input() does, before anything that drops a shape
        if isinstance(shared, Reason):
            raise Dropped(shared)
        event = msgspec.structs.replace(
            shared.event,
            subject=keyring.pseudonym(site.slug, subject) if subject else None,
            occurred_at=now,
            id=new_event_id(),
            basis={},
        )
        return Pending(shared.policy, event, shared.signals, shared.seen, shared.from_link)
