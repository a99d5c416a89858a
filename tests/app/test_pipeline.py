"""The hit pipeline's own steps, where they take shortcuts: reading the query, minting ids."""

import uuid
from urllib.parse import parse_qsl

import msgspec
import pytest

from app.pipeline import hit_values, new_event_id, parse_query

QUERIES = [
    "p=/pricing&u=visitor-42",
    "u=a&u=b&k=open",  # the last of a repeated parameter wins
    "u=&p=/a&&k",  # blanks and parameters without a value are left out
    "p=/a=b&c=spring&utm_source=news&unknown=1",  # '=' inside a value
    "u=alice%40example.test&p=%2Fa+b",  # escaped: parse_qsl itself
    "gdpr=1&gdpr_consent=CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA&t=tok.sig",
    "",
]


@pytest.mark.parametrize("query", QUERIES)
def test_the_query_is_read_as_parse_qsl_reads_it(query: str) -> None:
    assert parse_query(query) == hit_values(parse_qsl(query))


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    # the same objects uuid.UUID makes: equal, hashed, printed and spooled alike
    same = [uuid.UUID(str(i)) for i in ids]
    assert same == ids and set(same) == set(ids)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ids), type=list[uuid.UUID]) == ids
