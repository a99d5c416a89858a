"""A site over the admin API: read it and set its controller, on SQLite and PostgreSQL."""

from typing import Any

import pytest
from litestar.testing import TestClient

from app.base.settings import Settings
from tests.factories import auth, make_key, make_site

Client = TestClient[Any]
CONTROLLER = {
    "controller": "Example Shop GmbH",
    "contact_email": "privacy@shop.example",
    "address": "Hauptstraße 1, 10115 Berlin, Germany",
    "phone": "+49 30 1234567",
    "homepage": "https://shop.example/",
}


def test_an_admin_key_reads_the_site_and_sets_its_controller_field_by_field(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, origins=("https://shop.example",))
    admin = auth(make_key(settings, site))
    before = client.get(f"/v1/sites/{site}", headers=admin)
    assert before.status_code == 200, before.text
    assert before.json()["slug"] == site and before.json()["origins"] == ["https://shop.example"]
    assert all(before.json()[field] is None for field in CONTROLLER)

    first = client.patch(
        f"/v1/sites/{site}",
        json={"controller": "Example Shop GmbH", "contact_email": "privacy@shop.example"},
        headers=admin,
    )
    assert first.status_code == 200, first.text
    assert first.json()["controller"] == "Example Shop GmbH" and first.json()["phone"] is None

    rest = {k: v for k, v in CONTROLLER.items() if k not in ("controller", "contact_email")}
    second = client.patch(f"/v1/sites/{site}", json=rest, headers=admin)
    assert second.status_code == 200, second.text
    assert {k: second.json()[k] for k in CONTROLLER} == CONTROLLER
    after = client.get(f"/v1/sites/{site}", headers=admin).json()
    assert after == second.json()
    assert after["policy"] == "gdpr-strict" and after["created_at"] == before.json()["created_at"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"contact_email": "not an address"}, 422, "contact_email"),
        ({"homepage": "javascript:alert(1)"}, 422, "homepage"),
        ({"homepage": "https://"}, 422, "homepage"),
        ({"controller": "x" * 201}, 422, "controller"),
        ({"controller": ""}, 422, "controller"),
        ({"controller": "   "}, 422, "controller"),
        ({"address": "Hauptstraße 1\u0000"}, 422, "address"),
        ({"phone": None}, 422, "phone"),
        ({"owner": "someone"}, 422, "owner"),
        ({}, 422, "nothing to update"),
        ([], 422, ""),
    ],
)
def test_a_bad_controller_field_is_a_problem_naming_it_and_changes_nothing(
    client: Client, settings: Settings, body: Any, status: int, field: str
) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    assert client.patch(f"/v1/sites/{site}", json={"controller": "Kept"}, headers=admin).is_success
    # A good field beside the bad one: the body is taken whole or not at all.
    sent = {"phone": "+1 555 0100", **body} if isinstance(body, dict) and body else body
    response = client.patch(f"/v1/sites/{site}", json=sent, headers=admin)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.json()["detail"]
    after = client.get(f"/v1/sites/{site}", headers=admin).json()
    assert after["controller"] == "Kept" and after["phone"] is None


@pytest.mark.parametrize("scope", ["read", "ingest"])
def test_only_an_admin_key_of_the_site_reads_or_changes_it(
    client: Client, settings: Settings, scope: str
) -> None:
    site, other = make_site(settings), make_site(settings)
    narrow = auth(make_key(settings, site, scope))
    elsewhere = auth(make_key(settings, other, "admin"))
    body = {"controller": "Intruder Ltd"}
    for headers, expected in ((narrow, 403), (elsewhere, 403), ({}, 401)):
        assert client.get(f"/v1/sites/{site}", headers=headers).status_code == expected
        assert client.patch(f"/v1/sites/{site}", json=body, headers=headers).status_code == expected
    admin = auth(make_key(settings, site))
    assert client.get(f"/v1/sites/{site}", headers=admin).json()["controller"] is None


def test_an_unknown_site_is_a_404_problem(client: Client, settings: Settings) -> None:
    admin = auth(make_key(settings, make_site(settings)))
    for response in (
        client.get("/v1/sites/no-such-site", headers=admin),
        client.patch("/v1/sites/no-such-site", json={"controller": "X"}, headers=admin),
    ):
        assert response.status_code == 404
        assert "no-such-site" in response.json()["detail"]


def test_the_openapi_document_states_the_limits_and_who_may_call(client: Client) -> None:
    document = client.get("/schema/openapi.json").json()
    patch = document["paths"]["/v1/sites/{site}"]["patch"]
    assert patch["security"] == [{"ApiKey": []}]
    assert {"401", "403", "404", "422"} <= set(patch["responses"])
    reference = patch["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][reference.rsplit("/", 1)[1]]
    fields = schema["properties"]
    assert fields["controller"]["maxLength"] == 200
    assert fields["address"]["maxLength"] == 500
    assert fields["phone"]["maxLength"] == 50
    assert fields["contact_email"]["maxLength"] == 254 and "pattern" in fields["contact_email"]
    assert fields["homepage"]["maxLength"] == 2048 and "pattern" in fields["homepage"]
