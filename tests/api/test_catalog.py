"""Hosts and VM templates through HTTP: create, list, get, update with ETags, delete; every bad
input answered with the field's path, and nothing stored."""
from __future__ import annotations

import json

import pytest

from .helpers import HOST, TEMPLATE, error_fields, experiment

RESOURCES = [("/api/v1/hosts", HOST, {"memory_mb": 0}, "spec.memory_mb"),
             ("/api/v1/vm-templates", TEMPLATE, {"memory_mb": 256, "replacement": "mru"}, "spec.replacement")]


@pytest.mark.parametrize("url, spec, bad_spec, bad_field", RESOURCES)
def test_create_list_get(api, url, spec, bad_spec, bad_field):
    created = api.post(url, {"name": "small", "description": "for tests", "spec": spec})
    assert created.status_code == 201
    item = created.get_json()
    assert item["version"] == 1 and item["spec"] == spec and item["description"] == "for tests"
    assert created.headers["Location"].endswith(f"{url}/{item['id']}") and created.headers["ETag"]
    api.create(url, {"name": "Large one", "spec": spec})

    listed = api.get(url)
    assert [i["name"] for i in listed.get_json()] == ["small", "Large one"]
    assert json.loads(listed.headers["X-Pagination"])["total"] == 2
    assert [i["name"] for i in api.get(f"{url}?name_contains=LARGE").get_json()] == ["Large one"]
    assert [i["name"] for i in api.get(f"{url}?name=small").get_json()] == ["small"]
    page = api.get(f"{url}?page=2&page_size=1")
    assert [i["name"] for i in page.get_json()] == ["Large one"]

    got = api.get(f"{url}/{item['id']}")
    assert got.get_json() == item and got.headers["ETag"] == created.headers["ETag"]
    assert api.get(f"{url}/{item['id']}", headers={"If-None-Match": got.headers["ETag"]}).status_code == 304
    assert api.get(f"{url}/999").status_code == 404


@pytest.mark.parametrize("url, spec, bad_spec, bad_field", RESOURCES)
def test_bad_input_names_the_field_and_stores_nothing(api, counts, url, spec, bad_spec, bad_field):
    before = counts()
    cases = [
        ({"name": "x", "spec": bad_spec}, bad_field),
        ({"name": "x", "spec": {**spec, "colour": "blue"}}, "spec.colour"),
        ({"name": "x", "spec": spec, "owner": "me"}, "owner"),
        ({"name": "", "spec": spec}, "name"),
        ({"spec": spec}, "name"),
        ({"name": "x"}, "spec"),
        ({"name": "x", "spec": "big"}, "spec"),
    ]
    for body, field in cases:
        response = api.post(url, body)
        assert response.status_code == 422, body
        assert field in error_fields(response), (body, response.get_json())
        assert field in response.get_json()["message"]
    assert api.get(f"{url}?colour=blue").status_code == 422
    assert "colour" in error_fields(api.get(f"{url}?colour=blue"), "query")
    assert api.get(f"{url}?page_size=1000").status_code == 422
    bad_json = api.client.post(url, data="{nope", content_type="application/json")
    assert bad_json.status_code == 400 and bad_json.get_json()["code"] == 400
    assert counts() == before


@pytest.mark.parametrize("url, spec, bad_spec, bad_field", RESOURCES)
def test_updates_need_the_current_etag(api, url, spec, bad_spec, bad_field):
    created = api.post(url, {"name": "h", "spec": spec})
    item_url = created.headers["Location"]
    etag = created.headers["ETag"]

    missing = api.patch(item_url, {"description": "no If-Match"})
    assert missing.status_code == 428 and missing.get_json()["message"]

    patched = api.patch(item_url, {"description": "first"}, headers={"If-Match": etag})
    assert patched.status_code == 200 and patched.get_json()["version"] == 2
    assert patched.headers["ETag"] != etag

    stale = api.put(item_url, {"name": "h", "description": "lost update", "spec": spec}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert api.get(item_url).get_json()["description"] == "first"

    replaced = api.put(item_url, {"name": "h2", "spec": spec}, headers={"If-Match": patched.headers["ETag"]})
    assert replaced.status_code == 200
    assert replaced.get_json()["description"] == "" and replaced.get_json()["name"] == "h2"

    bad = api.patch(item_url, {"spec": bad_spec}, headers={"If-Match": replaced.headers["ETag"]})
    assert bad.status_code == 422 and bad_field in error_fields(bad)
    assert api.patch(item_url, {}, headers={"If-Match": replaced.headers["ETag"]}).status_code == 422
    assert api.get(item_url).get_json()["version"] == 3

    assert api.delete(item_url).status_code == 428
    assert api.delete(item_url, headers={"If-Match": etag}).status_code == 412
    assert api.delete(item_url, headers={"If-Match": replaced.headers["ETag"]}).status_code == 204
    assert api.get(item_url).status_code == 404


@pytest.mark.parametrize("url, spec, bad_spec, bad_field", RESOURCES)
def test_names_are_unique(api, url, spec, bad_spec, bad_field):
    api.create(url, {"name": "same", "spec": spec})
    other = api.create(url, {"name": "other", "spec": spec})
    duplicate = api.post(url, {"name": "same", "spec": spec})
    assert duplicate.status_code == 409 and "same" in duplicate.get_json()["message"]
    etag = api.get(f"{url}/{other['id']}").headers["ETag"]
    renamed = api.patch(f"{url}/{other['id']}", {"name": "same"}, headers={"If-Match": etag})
    assert renamed.status_code == 409


def test_a_host_or_template_in_use_is_not_deleted(api, counts):
    host = api.create("/api/v1/hosts", {"name": "h", "spec": HOST})
    template = api.create("/api/v1/vm-templates", {"name": "t", "spec": TEMPLATE})
    exp = api.create("/api/v1/experiments", experiment(host_id=host["id"], template_id=template["id"]))
    assert exp["host_id"] == host["id"] and exp["template_ids"] == [template["id"]]
    before = counts()
    for url in (f"/api/v1/hosts/{host['id']}", f"/api/v1/vm-templates/{template['id']}"):
        refused = api.delete(url, headers={"If-Match": api.get(url).headers["ETag"]})
        assert refused.status_code == 409 and "used by 1 experiment" in refused.get_json()["message"]
    assert counts() == before

    assert api.delete(f"/api/v1/experiments/{exp['id']}").status_code == 204
    for url in (f"/api/v1/hosts/{host['id']}", f"/api/v1/vm-templates/{template['id']}"):
        assert api.delete(url, headers={"If-Match": api.get(url).headers["ETag"]}).status_code == 204
