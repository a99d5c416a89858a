"""What the dashboard reads besides the reports: the key's scope, consent rates by purpose and
audience sizes (read scope: sizes only, never members)."""

import csv
import io
from typing import Any

from litestar.testing import TestClient

from app.base.settings import Settings
from tests.factories import auth, make_key, make_site, subject_id

Client = TestClient[Any]


def grant(client: Client, site: str, admin: str, **purposes: bool) -> str:
    person = subject_id()
    body = {"subject": person, "purposes": purposes}
    assert client.post(f"/v1/sites/{site}/consent", json=body, headers=auth(admin)).is_success
    return person


def test_the_key_s_scope_is_told_to_its_own_site_only(client: Client, settings: Settings) -> None:
    site, other = make_site(settings), make_site(settings)
    for scope in ("read", "admin"):
        key = make_key(settings, site, scope)
        answer = client.get(f"/v1/sites/{site}/key", headers=auth(key))
        assert answer.json() == {"scope": scope}
        assert client.get(f"/v1/sites/{other}/key", headers=auth(key)).status_code == 403
    ingest = make_key(settings, site, "ingest")
    assert client.get(f"/v1/sites/{site}/key", headers=auth(ingest)).status_code == 403
    assert client.get(f"/v1/sites/{site}/key").status_code == 401


def test_consent_rates_count_live_grants_per_purpose(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    admin, read = make_key(settings, site), make_key(settings, site, "read")
    grant(client, site, admin, analytics=True, marketing=True, email=False)
    grant(client, site, admin, analytics=True, marketing=False)
    gone = grant(client, site, admin, analytics=True, marketing=True)
    assert client.delete(f"/v1/sites/{site}/consent/{gone}", headers=auth(admin)).is_success
    answer = client.get(f"/v1/sites/{site}/reports/consent", headers=auth(read))
    assert answer.json() == {
        "purposes": [
            {"purpose": "analytics", "granted": 2, "not_granted": 1, "rate": round(2 / 3, 4)},
            {"purpose": "marketing", "granted": 1, "not_granted": 2, "rate": round(1 / 3, 4)},
            {"purpose": "email", "granted": 0, "not_granted": 2, "rate": 0.0},
        ],
        "suppressed": False,
    }
    as_csv = client.get(
        f"/v1/sites/{site}/reports/consent", headers={**auth(read), "Accept": "text/csv"}
    )
    table = list(csv.reader(io.StringIO(as_csv.text)))
    assert table[0] == ["purpose", "granted", "not_granted", "rate"]
    assert table[2] == ["marketing", "1", "2", str(round(1 / 3, 4))]
    empty = make_site(settings)
    rates = client.get(
        f"/v1/sites/{empty}/reports/consent", headers=auth(make_key(settings, empty, "read"))
    ).json()
    assert all(p["rate"] is None and p["granted"] == 0 for p in rates["purposes"])


def test_audience_sizes_count_members_and_exclusions_without_naming_anyone(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    admin, read = make_key(settings, site), make_key(settings, site, "read")
    ingest = make_key(settings, site, "ingest")
    keen = grant(client, site, admin, analytics=True, marketing=True)
    shy = grant(client, site, admin, analytics=True, marketing=False)
    events = [{"kind": "pageview", "subject": person, "page": "/shoes"} for person in (keen, shy)]
    posted = client.post(f"/v1/sites/{site}/events", json={"events": events}, headers=auth(ingest))
    assert posted.json()["accepted"] == 2
    rule = {"name": "Shoes", "rule": {"kinds": ["pageview"], "page_prefix": "/shoes"}}
    made = client.post(f"/v1/sites/{site}/audiences", json=rule, headers=auth(admin)).json()
    answer = client.get(f"/v1/sites/{site}/reports/audiences", headers=auth(read))
    assert answer.json() == {
        "audiences": [
            {
                "id": made["id"],
                "name": "Shoes",
                "members": 1,
                "excluded": {"no_consent": 1, "gpc": 0, "opt_out": 0},
            }
        ]
    }
    assert keen not in answer.text and shy not in answer.text
    as_csv = client.get(
        f"/v1/sites/{site}/reports/audiences", headers={**auth(read), "Accept": "text/csv"}
    )
    assert list(csv.reader(io.StringIO(as_csv.text))) == [
        ["audience", "members", "no_consent", "gpc", "opt_out"],
        ["Shoes", "1", "1", "0", "0"],
    ]
    ingest_answer = client.get(f"/v1/sites/{site}/reports/audiences", headers=auth(ingest))
    assert ingest_answer.status_code == 403
