"""Finished results served from each process's cache, with ETags and 304s (service.api.finished),
on SQLite and PostgreSQL: the same bytes as a cold read, never a stale unfinished run, a 404 once
deleted, the token checked before any cached body, and a dropped connection read again."""
from __future__ import annotations

import datetime as dt

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text, update

from service import auth, db
from service.models import Run
from service.tasks import execute_run

from .helpers import experiment, token_for

READS = ("/api/v1/runs/{run}", "/api/v1/runs/{run}/series", "/api/v1/runs/{run}/series?format=csv",
         "/api/v1/experiments/{exp}", "/api/v1/experiments/{exp}/comparison")


def _submit(api, policies=("static", "esx")) -> tuple[int, list[int]]:
    created = api.post("/api/v1/experiments", experiment(policies=policies, duration_s=1.0))
    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    return body["id"], [r["id"] for r in body["runs"]]


def _set(settings, run_id: int, **values) -> None:
    with db.session_scope(settings.database_url) as session:
        session.execute(update(Run).where(Run.id == run_id).values(**values))


def _paths(exp: int, run: int) -> list[str]:
    return [p.format(exp=exp, run=run) for p in READS]


def test_finished_results_are_the_same_bytes_with_a_stable_etag_and_304(api, make_app, settings):
    exp, (static, esx) = _submit(api)
    assert execute_run(static, worker="test") == "succeeded"
    assert execute_run(esx, worker="test") == "succeeded"
    other = make_app().test_client()        # another process: its own, empty cache
    for path in _paths(exp, static) + [f"/api/v1/experiments/{exp}/comparison?baseline=esx", "/api/v1/runs"]:
        first, second, cold = api.get(path), api.get(path), other.get(path)
        assert first.status_code == second.status_code == cold.status_code == 200, (path, first.get_data())
        assert first.get_data() == second.get_data() == cold.get_data(), path
        assert first.mimetype == cold.mimetype
        if path == "/api/v1/runs":
            continue                            # a list is never one result: no ETag
        assert first.headers["ETag"] and first.headers["ETag"] == second.headers["ETag"] == cold.headers["ETag"]
        again = api.get(path, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304 and again.get_data() == b"", path
        assert api.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    tags = {api.get(p).headers["ETag"] for p in _paths(exp, static)
            + [f"/api/v1/runs/{esx}", f"/api/v1/experiments/{exp}/comparison?baseline=esx"]}
    assert len(tags) == len(READS) + 2, "every result has its own ETag"
    # a cached comparison still checks its query: a policy the experiment did not run
    bad = api.get(f"/api/v1/experiments/{exp}/comparison?baseline=kvm")
    assert bad.status_code == 422 and "baseline" in bad.get_json()["errors"]["query"]


def test_an_unfinished_run_is_never_served_stale(api, settings):
    exp, (static, esx) = _submit(api)
    assert execute_run(static, worker="test") == "succeeded"
    for path in _paths(exp, esx)[:1] + _paths(exp, esx)[3:]:
        assert api.get(path).status_code == 200
    queued = api.get(f"/api/v1/runs/{esx}")
    assert queued.get_json()["status"] == "queued"
    assert api.get(f"/api/v1/runs/{esx}/series").status_code == 409
    before = {p: api.get(p) for p in (f"/api/v1/experiments/{exp}", f"/api/v1/experiments/{exp}/comparison")}

    now = dt.datetime.now(dt.timezone.utc)
    _set(settings, esx, status="running", progress=0.5, started_at=now, heartbeat_at=now, attempts=1, worker="w")
    running = api.get(f"/api/v1/runs/{esx}")
    assert running.get_json()["status"] == "running" and running.get_json()["progress"] == 0.5
    assert running.headers["ETag"] != queued.headers["ETag"]
    assert api.get(f"/api/v1/runs/{esx}", headers={"If-None-Match": queued.headers["ETag"]}).status_code == 200
    listed = {r["id"]: r for r in api.get(f"/api/v1/runs?experiment_id={exp}").get_json()}
    assert listed[esx]["status"] == "running" and listed[esx]["progress"] == 0.5

    _set(settings, esx, status="queued", progress=0.0, attempts=0)
    assert execute_run(esx, worker="test") == "succeeded"
    assert api.get(f"/api/v1/runs/{esx}").get_json()["status"] == "succeeded"
    assert api.get(f"/api/v1/runs/{esx}/series").status_code == 200
    listed = {r["id"]: r for r in api.get(f"/api/v1/runs?experiment_id={exp}").get_json()}
    assert listed[esx]["status"] == "succeeded"
    for path, old in before.items():
        new = api.get(path)
        assert new.headers["ETag"] != old.headers["ETag"], path
        assert api.get(path, headers={"If-None-Match": old.headers["ETag"]}).status_code == 200
    assert api.get(f"/api/v1/experiments/{exp}").get_json()["status"] == "succeeded"
    rows = api.get(f"/api/v1/experiments/{exp}/comparison").get_json()["runs"]
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"] and rows[1]["metrics"]["slowdown"] is not None


def test_a_deleted_result_is_gone_and_a_new_run_is_not_an_old_one(api):
    exp, (static,) = _submit(api, policies=("static",))
    assert execute_run(static, worker="test") == "succeeded"
    old = {p: api.get(p).get_data() for p in _paths(exp, static)}
    assert api.delete(f"/api/v1/experiments/{exp}").status_code == 204
    for path in old:
        assert api.get(path).status_code == 404, path
    # SQLite gives the ids of the last rows deleted to the next ones: another creation time, another key
    exp2, (run2,) = _submit(api, policies=("esx",))
    assert execute_run(run2, worker="test") == "succeeded"
    got = api.get(f"/api/v1/runs/{run2}").get_json()
    assert got["policy_name"] == "esx" and got["experiment_id"] == exp2
    assert api.get(f"/api/v1/experiments/{exp2}").get_json()["runs"][0]["policy_name"] == "esx"


def test_closed_reads_check_the_token_before_any_cached_body(make_app):
    app = make_app(open_reads=False)
    client = app.test_client()
    url = app.extensions["vmemlab"].settings.database_url
    created = client.post("/api/v1/experiments", json=experiment(policies=("static",), duration_s=1.0))
    exp, run = created.get_json()["id"], created.get_json()["runs"][0]["id"]
    assert execute_run(run, worker="test") == "succeeded"
    reader = token_for(url, role="write", name="reader")
    for path in _paths(exp, run):
        assert client.get(path).status_code == 200                              # cached now
        assert FlaskClient(app).get(path).status_code == 401, path             # no token
        assert FlaskClient(app).get(path, headers={"Authorization": "Bearer vml_nope"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    with db.session_scope(url) as session:
        auth.revoke_token(session, "reader")
    for path in _paths(exp, run):
        assert client.get(path, headers={"Authorization": f"Bearer {reader}"}).status_code == 401, path


def test_a_dropped_read_connection_is_read_again(api, settings):
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: the hot reads' engine has no pre-ping")
    exp, (static,) = _submit(api, policies=("static",))
    assert execute_run(static, worker="test") == "succeeded"
    paths = _paths(exp, static) + ["/api/v1/runs"]
    for path in paths:
        assert api.get(path).status_code == 200
    admin = create_engine(db.normalize_url(settings.database_url), isolation_level="AUTOCOMMIT")
    try:
        for path in paths:          # every pooled connection of the app ends before each read
            with admin.connect() as conn:
                ended = conn.execute(text("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalars()
                assert any(ended), "no connection of the app was there to end"
            assert api.get(path).status_code == 200, path
    finally:
        admin.dispose()
