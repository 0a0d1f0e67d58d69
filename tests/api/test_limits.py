"""Resource limits through the API: an experiment over a limit is answered 422 naming the limit and
its value, and nothing is stored; list pages are bounded."""
from __future__ import annotations

from .helpers import Api, experiment


def test_an_experiment_over_a_limit_is_422_naming_it_and_stores_nothing(make_app, counts):
    api = Api(make_app(max_vms=1, max_sim_memory_mb=1).test_client())
    before = counts()
    r = api.post("/api/v1/experiments", experiment())
    assert r.status_code == 422
    body = r.get_json()
    assert body["errors"]["json"] == {"vms": ["1 VMs at most (VMEMLAB_MAX_VMS), got 2"]}
    assert "1 VMs at most (VMEMLAB_MAX_VMS)" in body["message"]

    doc = experiment()
    doc["vms"] = doc["vms"][:1]
    r = api.post("/api/v1/experiments", doc)
    assert r.status_code == 422
    [message] = r.get_json()["errors"]["json"]["(document)"]
    assert "the limit is 1 MB (VMEMLAB_MAX_SIM_MEMORY_MB)" in message
    assert counts() == before


def test_default_limits(api, counts):
    before = counts()
    r = api.post("/api/v1/experiments", experiment(duration_s=100_000, epoch_s=10))
    assert r.status_code == 422
    assert r.get_json()["errors"]["json"]["duration_s"] == ["86400 s at most (VMEMLAB_MAX_DURATION_S), got 100000 s"]
    assert counts() == before
    assert api.get("/api/v1/experiments?page_size=100").status_code == 200
    r = api.get("/api/v1/experiments?page_size=101")
    assert r.status_code == 422 and "page_size" in r.get_json()["errors"]["query"]


def test_a_body_over_the_request_limit_is_a_413_naming_the_limit(make_app, counts):
    api = Api(make_app(max_request_bytes=4096).test_client())
    before = counts()
    document = experiment(policies=("static",), name="x" * 5000)
    response = api.post("/api/v1/experiments", document)
    assert response.status_code == 413
    assert response.get_json()["message"] == ("the request body is larger than the limit of 4096 bytes "
                                              "(VMEMLAB_MAX_REQUEST_BYTES)")
    assert counts() == before
    assert api.post("/api/v1/experiments", experiment(policies=("static",))).status_code == 201


def test_page_size_is_bounded_by_the_setting_and_documented(make_app):
    client = make_app(max_page_size=5).test_client()
    assert client.get("/api/v1/runs?page_size=5").status_code == 200
    response = client.get("/api/v1/runs?page_size=6")
    assert response.status_code == 422
    assert response.get_json()["errors"]["query"]["page_size"] == ["must be at most 5 (VMEMLAB_MAX_PAGE_SIZE)"]
    document = client.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/runs", "/api/v1/experiments", "/api/v1/hosts", "/api/v1/traces"):
        (size,) = [p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "page_size"]
        assert size["schema"]["maximum"] == 5, path
