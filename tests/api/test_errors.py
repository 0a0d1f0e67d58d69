"""One JSON error shape everywhere; nothing from inside the server reaches the client; the
OpenAPI document and the docs page."""
from __future__ import annotations

from sqlalchemy.exc import OperationalError

from service.settings import DEFAULT_DOCS_UI_URL, Settings


def test_unknown_routes_and_methods_answer_json(api):
    for response, code in [(api.get("/api/v1/nothing-here"), 404), (api.delete("/api/v1/hosts"), 405),
                           (api.get("/api/v1/hosts/abc"), 404), (api.get("/api/v1/runs/12345"), 404)]:
        assert response.status_code == code and response.is_json
        body = response.get_json()
        assert body["code"] == code and body["status"] and body["message"]
    assert "no run with id 12345" in api.get("/api/v1/runs/12345").get_json()["message"]


def test_failures_inside_the_server_are_logged_not_shown(make_app, caplog):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail: SELECT password FROM users")

    @app.get("/db-down")
    def db_down():
        raise OperationalError("SELECT secret FROM t", {}, Exception("connection refused to db.internal"))

    client = app.test_client()
    failed = client.get("/boom")
    assert failed.status_code == 500 and failed.is_json
    assert failed.get_json()["message"] and "secret" not in failed.get_data(as_text=True)
    assert "secret detail" in caplog.text          # the log has it
    unavailable = client.get("/db-down")
    assert unavailable.status_code == 503 and "secret" not in unavailable.get_data(as_text=True)
    assert "db.internal" not in unavailable.get_data(as_text=True)


def test_openapi_document_and_docs_page(api, make_app):
    spec = api.get("/api/v1/openapi.json").get_json()
    assert spec["info"]["title"] == "vmemlab" and spec["openapi"].startswith("3.")
    for path in ("/api/v1/hosts", "/api/v1/hosts/{host_id}", "/api/v1/vm-templates", "/api/v1/traces",
                 "/api/v1/plugins", "/api/v1/experiments", "/api/v1/experiments/{experiment_id}/comparison",
                 "/api/v1/runs", "/api/v1/runs/{run_id}/series", "/api/v1/runs/{run_id}/cancel",
                 "/api/v1/comparisons", "/api/v1/health"):
        assert path in spec["paths"], path
    put = spec["paths"]["/api/v1/hosts/{host_id}"]["put"]
    assert {"412", "428"} <= set(put["responses"])
    assert "ExperimentDocument" in spec["components"]["schemas"]
    docs = api.get("/api/v1/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.get_data(as_text=True)
    local = make_app(docs_ui_url="/static/swagger-ui/").test_client().get("/api/v1/docs")
    assert "/static/swagger-ui/" in local.get_data(as_text=True)
    assert make_app(docs_ui_url=None).test_client().get("/api/v1/docs").status_code == 404
    assert Settings.from_env({}).docs_ui_url == DEFAULT_DOCS_UI_URL
    assert Settings.from_env({"VMEMLAB_DOCS_UI_URL": "off"}).docs_ui_url is None
    assert Settings.from_env({"VMEMLAB_DOCS_UI_URL": "/swagger/"}).docs_ui_url == "/swagger/"


def test_health(api):
    response = api.get("/api/v1/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["database"]["ok"] and body["broker"]["ok"] and body["broker"]["embedded"]
    assert body["workers"]["method"] == "run heartbeats" and body["status"] in ("ok", "degraded")
    assert body["workers"]["queued_runs"] == 0
