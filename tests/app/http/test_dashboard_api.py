"""What the dashboard reads besides the reports: the key's scope, consent rates by purpose and
audience sizes (read scope: sizes only, never members)."""

import csv
import io
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from app.base.settings import Settings
from app.main import create_app
from tests.factories import auth, make_key, make_site, settings_for, subject_id

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


def test_rates_and_sizes_follow_the_policy_a_new_version_and_min_subjects(
    database_url: str, policies_copy: Path
) -> None:
    """A new version of gdpr-strict voids earlier consents (reconsent_on_change), as the pixel
    decides; under min_subjects = 3 an audience's counts of one person are withheld."""
    strict = policies_copy / "gdpr-strict.toml"
    text = strict.read_text()
    kept = (policies_copy / "ccpa.toml").read_text()
    kept = kept.replace('name = "ccpa"', 'name = "ccpa-k3"').replace(
        "min_subjects = 1", "min_subjects = 3"
    )
    (policies_copy / "ccpa-k3.toml").write_text(kept)
    settings = settings_for(database_url, policies_dir=policies_copy)
    site = make_site(settings)
    small = make_site(settings, policy="ccpa-k3", jurisdiction="us-ca")
    admin, read = make_key(settings, site), make_key(settings, site, "read")
    with TestClient(create_app(settings)) as client:
        grant(client, site, admin, analytics=True)
        rates = client.get(f"/v1/sites/{site}/reports/consent", headers=auth(read)).json()
        assert rates["purposes"][0] == {
            "purpose": "analytics",
            "granted": 1,
            "not_granted": 0,
            "rate": 1.0,
        }
        small_admin = make_key(settings, small)
        person = grant(client, small, small_admin, analytics=True, marketing=False)
        event = {"kind": "pageview", "subject": person, "page": "/shoes"}
        ingest = auth(make_key(settings, small, "ingest"))
        client.post(f"/v1/sites/{small}/events", json={"events": [event]}, headers=ingest)
        rule = {"name": "Shoes", "rule": {"kinds": ["pageview"]}}
        client.post(f"/v1/sites/{small}/audiences", json=rule, headers=auth(small_admin))
        sizes = client.get(
            f"/v1/sites/{small}/reports/audiences", headers=auth(make_key(settings, small, "read"))
        ).json()
        [audience] = sizes["audiences"]
        assert audience["members"] == 0
        assert audience["excluded"] == {"no_consent": None, "gpc": 0, "opt_out": 0}
    assert 'version = "2025-07-07"' in text
    strict.write_text(text.replace('version = "2025-07-07"', 'version = "2026-12-03"'))
    with TestClient(create_app(settings)) as client:
        rates = client.get(f"/v1/sites/{site}/reports/consent", headers=auth(read)).json()
        assert rates["purposes"][0] == {
            "purpose": "analytics",
            "granted": 0,
            "not_granted": 1,
            "rate": 0.0,
        }
