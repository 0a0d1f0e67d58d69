"""Whole answers kept per process while PostgreSQL's change feed says nothing they show changed
(service.change_feed, service.api.response_cache): served without a single SQL statement, the
same bytes and headers as Flask's, dropped by a change whichever connection made it, and never
served while the feed is down. On SQLite there is no feed and no middleware."""
from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, event, text

from service import db
from service.tasks import execute_run

from .helpers import experiment, with_token

HOT = ("/api/v1/runs/{run}", "/api/v1/runs/{run}/series", "/api/v1/experiments/{exp}",
       "/api/v1/experiments/{exp}/comparison", "/api/v1/experiments/{exp}/comparison?baseline=esx",
       "/api/v1/runs?sort=-slowdown", "/api/v1/runs?experiment_id={exp}&page_size=1")


@pytest.fixture
def feed(app: Flask, settings):
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: SQLite has no change feed")
    feed = app.extensions["vmemlab.feed"]
    assert feed.wait_live(10), feed.status()
    return feed


class Statements:
    """SQL statements sent by the app's engines (the default one and the hot reads' one)."""

    def __init__(self, app: Flask):
        self.count = 0
        self.engines = [db.get_engine(app.extensions["vmemlab"].settings.database_url),
                        app.extensions["vmemlab"].reads.kw["bind"]]
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1

    def close(self) -> None:
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._seen)


def _finished(api, feed, policies=("static", "esx")) -> tuple[int, list[int]]:
    created = api.post("/api/v1/experiments", experiment(policies=policies, duration_s=1.0))
    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    runs = [r["id"] for r in body["runs"]]
    for run in runs:
        assert execute_run(run, worker="test") == "succeeded"
    assert feed.wait_live(10)
    return body["id"], runs


def _without_date(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != "date"}


def test_kept_answers_are_flasks_bytes_and_headers_without_sql(api, app, make_app, feed):
    exp, (static, _) = _finished(api, feed)
    plain = make_app(change_feed=False).test_client()        # no middleware: Flask's own answers
    assert feed.wait_live(10)                                # that app stored its token: a commit
    statements = Statements(app)
    try:
        for path in (p.format(exp=exp, run=static) for p in HOT):
            first = api.get(path)
            statements.count = 0
            kept = api.get(path)
            assert statements.count == 0, f"{path}: {statements.count} statements for a kept answer"
            reference = plain.get(path)
            assert first.status_code == kept.status_code == reference.status_code == 200, path
            assert kept.get_data() == first.get_data() == reference.get_data(), path
            assert _without_date(kept.headers) == _without_date(reference.headers), path
            if "ETag" in reference.headers:
                tag = reference.headers["ETag"]
                not_modified = api.get(path, headers={"If-None-Match": f'"other", {tag}'})
                flask_304 = plain.get(path, headers={"If-None-Match": tag})
                assert not_modified.status_code == flask_304.status_code == 304, path
                assert not_modified.get_data() == flask_304.get_data() == b""
                assert _without_date(not_modified.headers) == _without_date(flask_304.headers), path
                assert api.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
        assert statements.count == 0
        assert len(app.extensions["vmemlab.answers"]) == len(HOT)
        # counted in the request metrics like any answer
        labels = {"method": "GET", "route": "/api/v1/runs/<int:run_id>", "status": "200"}
        before = REGISTRY.get_sample_value("vmemlab_http_requests_total", labels) or 0.0
        assert api.get(f"/api/v1/runs/{static}").status_code == 200 and statements.count == 0
        assert REGISTRY.get_sample_value("vmemlab_http_requests_total", labels) == before + 1
    finally:
        statements.close()


def test_a_change_from_another_connection_drops_what_it_touches(api, app, settings, feed):
    exp, (static, esx) = _finished(api, feed)
    other_exp, (other,) = _finished(api, feed, policies=("static",))
    for path in (p.format(exp=exp, run=static) for p in HOT):
        assert api.get(path).status_code == 200
    assert api.get(f"/api/v1/runs/{other}").status_code == 200
    answers = app.extensions["vmemlab.answers"]
    kept = len(answers)
    elsewhere = create_engine(db.normalize_url(settings.database_url))     # not the app's engine
    try:
        with elsewhere.begin() as conn:
            conn.execute(text("UPDATE runs SET slowdown = 1000 WHERE id = :id"), {"id": esx})
        deadline = time.monotonic() + 5
        while api.get("/api/v1/runs?sort=-slowdown").get_json()[0]["id"] != esx:
            assert time.monotonic() < deadline, "the runs list still shows the old order"
        # its experiment and the lists went; the other run and the other experiment's stayed
        assert api.get(f"/api/v1/runs/{other}").status_code == 200
        assert len(answers) < kept
        assert ("", f"/api/v1/runs/{other}", "") in answers

        with elsewhere.begin() as conn:
            conn.execute(text("DELETE FROM experiments WHERE id = :id"), {"id": exp})
        deadline = time.monotonic() + 5
        while api.get(f"/api/v1/experiments/{exp}").status_code != 404:
            assert time.monotonic() < deadline, "a deleted experiment is still answered"
        for path in (p.format(exp=exp, run=static) for p in HOT[:5]):
            assert api.get(path).status_code == 404, path
        assert api.get(f"/api/v1/experiments/{other_exp}").status_code == 200
    finally:
        elsewhere.dispose()


def test_this_process_reads_its_own_writes_at_once(api, feed):
    exp, (static, _) = _finished(api, feed)
    listed = api.get(f"/api/v1/runs?experiment_id={exp}").get_json()
    for path in (p.format(exp=exp, run=static) for p in HOT):
        assert api.get(path).status_code == 200
    assert feed.live()
    assert api.delete(f"/api/v1/experiments/{exp}").status_code == 204
    for path in (p.format(exp=exp, run=static) for p in HOT[:5]):
        assert api.get(path).status_code == 404, path
    assert api.get(f"/api/v1/runs?experiment_id={exp}").get_json() == [] != listed


def test_a_dropped_feed_serves_nothing_kept_until_it_is_back(api, app, settings, feed):
    exp, (static, _) = _finished(api, feed, policies=("static", "esx"))
    path = f"/api/v1/runs/{static}"
    assert api.get(path).status_code == 200 and api.get(path).status_code == 200
    answers = app.extensions["vmemlab.answers"]
    assert len(answers) == 1
    admin = create_engine(db.normalize_url(settings.database_url), isolation_level="AUTOCOMMIT")
    statements = Statements(app)
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": feed.backend_pid}).scalar()
        deadline = time.monotonic() + 5
        while feed.live():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        statements.count = 0
        assert api.get(path).status_code == 200
        assert statements.count > 0, "read from the database while the feed is down"
        assert feed.status()["state"] != "live"
        assert api.get("/api/v1/health").get_json()["change_feed"]["state"] in ("connecting", "stopped")
        assert feed.wait_live(15), feed.status()
        assert api.get("/api/v1/health").get_json()["change_feed"]["state"] == "live"
        assert len(answers) == 0, "a new connection forgets every kept answer"
        api.get(path)
        statements.count = 0
        assert api.get(path).status_code == 200 and statements.count == 0
    finally:
        statements.close()
        admin.dispose()


def test_an_answer_read_across_a_change_is_not_kept(app, feed):
    from service.api.response_cache import Answer

    answers = app.extensions["vmemlab.answers"]
    token = feed.token()
    assert token is not None
    feed._changed("run 1 1")                      # as if a change arrived during the request
    assert not answers.put(("", "/x", ""), Answer("200 OK", [], b"{}", None, "/x", ("run", 1)), token)
    assert answers.put(("", "/x", ""), Answer("200 OK", [], b"{}", None, "/x", ("run", 1)), feed.token())
    feed._changed("run 7 1")
    assert len(answers) == 0
    assert answers.put(("", "/x", ""), Answer("200 OK", [], b"{}", None, "/x", ("run", 1)), feed.token())
    feed._changed("not 0009's")                   # not understood: anything may have changed
    assert len(answers) == 0


def test_closed_reads_never_use_kept_answers(make_app, settings):
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: SQLite has no change feed")
    app = make_app(open_reads=False)
    client = app.test_client()
    feed = app.extensions["vmemlab.feed"]
    created = client.post("/api/v1/experiments", json=experiment(policies=("static",), duration_s=1.0))
    run = created.get_json()["runs"][0]["id"]
    assert execute_run(run, worker="test") == "succeeded"
    assert feed.wait_live(10)
    for _ in range(2):
        assert client.get(f"/api/v1/runs/{run}").status_code == 200
    assert FlaskClient(app).get(f"/api/v1/runs/{run}").status_code == 401
    assert len(app.extensions["vmemlab.answers"]) == 0


def test_sqlite_has_no_feed_and_no_middleware(app, settings):
    if settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite")
    assert app.extensions["vmemlab.feed"] is None and "vmemlab.answers" not in app.extensions
    assert app.test_client().get("/api/v1/health").get_json()["change_feed"] == {"state": "off"}


def test_the_feed_is_off_when_asked(make_app, settings):
    app = with_token(make_app(change_feed=False))
    assert app.extensions["vmemlab.feed"] is None
