"""Faults on PostgreSQL: connections dropped mid-request (a clean 503, and the next request works),
mid-run (retried, the result stored once), a result whose commit answer was lost (not stored
twice), and a worker whose connections are dropped keeps its run. Split from test_faults.py,
whose helpers these share; every test ends by checking that no run and no result is lost or
duplicated."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
from sqlalchemy import create_engine, event, text

from service import db, tasks
from service.celery_app import create_celery
from service.runs import enqueue
from service.settings import Settings, use_settings
from tests.helpers import free_port

from .conftest import installed, truncate_all
from .helpers import busy, tiny
from .test_faults import (_all_runs, _assert_nothing_lost_or_duplicated, _auth, _experiments, _finished, _runs,
                          _submit, _wait)
from .test_worker import Workers, _environment, warm_engine  # noqa: F401  (warm_engine: an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

@pytest.fixture
def admin(postgres_server: str) -> Iterator:
    engine = create_engine(db.normalize_url(postgres_server), isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()


def _terminate(admin_engine, pid: int) -> None:
    """End one backend, waiting (up to 5 s) until it is gone."""
    with admin_engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})


@contextmanager
def _drop_connection_on(url: str, admin_engine, matches: Callable[[str], bool], times: int = 1):
    """While active: the first ``times`` statements of the app's engine for ``url`` that
    ``matches`` find their connection terminated just before they run."""
    engine = db.get_engine(url)
    dropped: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if len(dropped) < times and matches(statement):
            dropped.append(statement)
            _terminate(admin_engine, cursor.connection.info.backend_pid)   # psycopg 3

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield dropped
    finally:
        event.remove(engine, "before_cursor_execute", before)


@pytest.fixture
def pg_settings(postgres_migrated: str, tmp_path: Path) -> Iterator[Settings]:
    truncate_all(postgres_migrated)
    with installed(Settings(data_dir=tmp_path / "data", database_url=postgres_migrated, heartbeat_s=0.05,
                            stale_heartbeats=100)) as settings:
        yield settings


def _clean_error(response, code: int) -> None:
    assert response.status_code == code
    assert response.is_json
    body = response.get_json()
    assert body["code"] == code and body["message"]
    raw = response.get_data(as_text=True)
    for leak in ("Traceback", "SELECT", "INSERT", "psycopg", "sqlalchemy", "terminating connection"):
        assert leak not in raw, raw


def test_connections_dropped_mid_request_give_a_clean_503_and_the_next_request_works(pg_settings, admin, monkeypatch):
    from service.app import create_app

    monkeypatch.setattr("service.api.experiments.enqueue", lambda ids, app=None: [])   # no broker here
    client = create_app(pg_settings).test_client()
    headers = _auth(pg_settings)
    url = pg_settings.database_url

    with _drop_connection_on(url, admin, lambda sql: sql.startswith("INSERT INTO experiments")) as dropped:
        response = client.post("/api/v1/experiments", json=tiny(), headers=headers)
    assert dropped, "the INSERT never ran"
    _clean_error(response, 503)
    assert _experiments() == 0 and _all_runs() == []             # nothing half-written

    with _drop_connection_on(url, admin, lambda sql: sql.startswith("SELECT") and "FROM experiments" in sql) as dropped:
        response = client.get("/api/v1/experiments")
    assert dropped
    _clean_error(response, 503)

    # every pooled connection of the app dropped between requests: the pre-ping replaces them
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                          "WHERE datname = :db AND pid <> pg_backend_pid()"),
                     {"db": db.get_engine(url).url.database})
    assert client.get("/api/v1/experiments").status_code == 200
    posted = client.post("/api/v1/experiments", json=tiny(), headers=headers)
    assert posted.status_code == 201, posted.get_json()
    assert _experiments() == 1 and len(_all_runs()) == 1


def test_connections_dropped_mid_run_are_retried_and_the_result_is_stored_once(pg_settings, admin, caplog):
    (run_id,) = _submit(busy(2))
    url = pg_settings.database_url
    heartbeats = iter(range(1000))

    def heartbeat_or_result(sql: str) -> bool:
        if sql.startswith("UPDATE runs SET heartbeat_at"):
            return next(heartbeats) in (2, 5)                       # two heartbeats mid-run
        return sql.startswith("INSERT INTO run_series")               # mid-way through the result

    caplog.set_level(logging.WARNING, logger="service.tasks")
    with _drop_connection_on(url, admin, heartbeat_or_result, times=3) as dropped:
        outcome = tasks.execute_run(run_id, worker="w1")
    assert len(dropped) == 3 and dropped[-1].startswith("INSERT INTO run_series")
    assert outcome == "succeeded"
    retries = [r.getMessage() for r in caplog.records if "the database connection failed" in r.getMessage()]
    assert len(retries) == 3 and any("store the result" in m for m in retries), retries
    (run,) = _runs([run_id])
    assert run.status == "succeeded" and run.progress == 1.0
    _assert_nothing_lost_or_duplicated([run])


def test_a_result_whose_commit_answer_was_lost_is_not_stored_twice(settings, monkeypatch):
    """The commit of the result goes through but its answer is lost (the connection drops right
    after): the retry finds the attempt's own result and stores nothing more."""
    (run_id,) = _submit(tiny())
    engine = db.get_engine(settings.database_url)
    dialect = engine.dialect
    commit = dialect.do_commit
    seen: list[str] = []
    lost: list[bool] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO run_series"):
            seen.append(statement)

    def commit_then_lose_the_answer(dbapi_connection):
        commit(dbapi_connection)
        if seen and not lost:
            lost.append(True)
            raise dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    event.listen(engine, "before_cursor_execute", before)
    monkeypatch.setattr(dialect, "do_commit", commit_then_lose_the_answer)
    try:
        assert tasks.execute_run(run_id, worker="w1") == "succeeded"
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert lost and len(seen) == 1
    _assert_nothing_lost_or_duplicated(_runs([run_id]))


def test_a_worker_keeps_its_run_while_its_connections_are_dropped(postgres_migrated: str, tmp_path: Path, admin):
    """A real worker (PostgreSQL database, embedded broker) whose every connection is killed
    every 20 ms for as long as its run lasts: the run succeeds once."""
    truncate_all(postgres_migrated)
    app_name = f"vmemlab-faults-{free_port()}"
    env = _environment(DATABASE_URL=postgres_migrated, VMEMLAB_DATA_DIR=str(tmp_path / "var"),
                       VMEMLAB_HEARTBEAT_S="0.2", VMEMLAB_STALE_HEARTBEATS="100", PGAPPNAME=app_name)
    settings = Settings.from_env(env)
    use_settings(settings)
    workers = Workers(env, tmp_path)
    killed = 0
    try:
        ids = _submit({**busy(4), "epoch_s": 0.25})      # a heartbeat write every epoch
        enqueue(ids, app=create_celery(settings))
        workers.start("k1")
        _wait(lambda: _runs(ids)[0].status == "running", 60, "the run to start", workers.output)
        deadline = time.monotonic() + 90
        while not _finished(ids):
            if time.monotonic() > deadline:
                pytest.fail(f"the runs did not finish\n{workers.output()}")
            with admin.connect() as conn:
                killed += len(conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = :db AND application_name = :app"),
                    {"db": db.get_engine().url.database, "app": app_name}).all())
            time.sleep(0.02)
        runs = _runs(ids)
        assert killed >= 1      # the worker holds a pooled connection from its claim on
        assert all(r.status == "succeeded" for r in runs), workers.output()
        _assert_nothing_lost_or_duplicated(runs)
    finally:
        workers.stop_all()
        use_settings(None)
        db.dispose_engines()
