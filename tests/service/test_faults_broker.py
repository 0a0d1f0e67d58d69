"""Faults of the broker: Redis stopped and restarted empty under queued and running runs, with a
real worker (no run lost, duplicated or changed); the periodic sweep that sends again a run whose
message was lost; counting the messages waiting. Split from test_faults.py, whose helpers these share."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import pytest


from service import db, tasks
from service.celery_app import create_celery
from service.models import Run
from service.runs import broker_backlog, enqueue, recover_and_enqueue, unpublished_runs
from service.settings import Settings, use_settings

from .conftest import truncate_all
from .helpers import busy, tiny
from .redis_server import RedisServer
from .test_faults import (_all_runs, _assert_nothing_lost_or_duplicated, _auth, _experiments, _finished, _runs,
                          _submit, _wait)
from .test_worker import Workers, _environment, warm_engine  # noqa: F401  (warm_engine: an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture
def full_stack(postgres_migrated: str, tmp_path: Path):
    """PostgreSQL (the session's database, emptied), a throwaway Redis and the settings a worker
    gets: lost messages are sent again 1 s after they were last sent, by a recovery sweep every
    2.5 s (half the 5 s after which a heartbeat is stale)."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    truncate_all(postgres_migrated)
    env = _environment(DATABASE_URL=postgres_migrated, REDIS_URL=redis_server.url,
                       VMEMLAB_DATA_DIR=str(tmp_path / "var"), VMEMLAB_HEARTBEAT_S="0.05",
                       VMEMLAB_STALE_HEARTBEATS="100", VMEMLAB_REQUEUE_AFTER_S="1")
    settings = Settings.from_env(env)
    use_settings(settings)
    workers = Workers(env, tmp_path)
    try:
        yield settings, workers, redis_server
    finally:
        workers.stop_all()
        redis_server.stop()
        use_settings(None)
        db.dispose_engines()


def test_redis_stopped_and_restarted_loses_no_run(full_stack):
    from service.app import create_app

    settings, workers, redis_server = full_stack
    client = create_app(settings).test_client()
    headers = _auth(settings)
    workers.start("r1")

    posted = client.post("/api/v1/experiments", json={**busy(24), "epoch_s": 0.25}, headers=headers)
    assert posted.status_code == 201, posted.get_json()
    running = [r["id"] for r in posted.get_json()["runs"]]
    _wait(lambda: _runs(running)[0].progress > 0.05, 60, "the first run to make progress", workers.output)
    posted = client.post("/api/v1/experiments", json=tiny(policies=("static", "esx")), headers=headers)
    assert posted.status_code == 201, posted.get_json()
    queued = [r["id"] for r in posted.get_json()["runs"]]
    assert [r.status for r in _runs(queued)] == ["queued", "queued"]

    redis_server.stop()                            # the queued messages are gone with it
    try:
        refused = client.post("/api/v1/experiments", json=tiny(), headers=headers)
        assert refused.status_code == 503, refused.get_json()
        body = refused.get_json()
        assert body["code"] == 503 and "broker" in body["message"] and refused.headers.get("Retry-After")
        assert _experiments() == 2 and len(_all_runs()) == 3      # nothing stored
        health = client.get("/api/v1/health")
        assert health.status_code == 503
        report = health.get_json()
        assert report["status"] == "unavailable" and report["database"]["ok"] is True
        assert report["broker"]["ok"] is False and report["broker"]["error"]
        assert "broker" in report["message"]
        time.sleep(1.0)                            # the worker notices, and keeps simulating
        assert _runs(running)[0].status == "running"
    finally:
        redis_server.start()                       # same port, empty

    _wait(lambda: _finished(running + queued), 90, "the runs to finish after Redis returned", workers.output)
    assert client.get("/api/v1/health").status_code == 200
    posted = client.post("/api/v1/experiments", json=tiny(), headers=headers)
    assert posted.status_code == 201, posted.get_json()
    later = [r["id"] for r in posted.get_json()["runs"]]
    _wait(lambda: _finished(later), 60, "a run posted after Redis returned", workers.output)

    runs = _all_runs()
    assert [r.id for r in runs] == running + queued + later
    assert all(r.status == "succeeded" for r in runs), workers.output()
    _assert_nothing_lost_or_duplicated(runs)
    logs = workers.output()
    # who sent the lost runs again: the broker check (service.broker_watch), or, with this
    # fixture's 1 s VMEMLAB_REQUEUE_AFTER_S, the periodic sweep when its turn came first
    assert ("the broker came back without its messages" in logs
            or "sent again runs still queued" in logs), logs[-4000:]


def test_a_queued_run_whose_message_was_lost_is_sent_again_once(settings, monkeypatch):
    """The recovery sweep, in-process: a run queued longer than requeue_after_s since it was last
    sent is sent again, once per interval however many workers sweep, unless the broker's queue
    still holds a message per queued run; a broker that cannot take it leaves it due for the next
    sweep."""
    import datetime as dt

    ids = _submit(tiny(policies=("static", "esx")))
    sent: list[int] = []
    backlog: list[Optional[int]] = [0]
    monkeypatch.setattr("service.runs.enqueue", lambda ids, app=None: sent.extend(ids))
    monkeypatch.setattr("service.runs.broker_backlog", lambda app=None, queue=None: backlog[0])
    assert recover_and_enqueue() == [] and sent == []          # just created: not due
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=settings.requeue_after_s + 1)
    with db.session_scope() as s:
        assert unpublished_runs(s, now=later) == ids
        assert unpublished_runs(s, now=later) == []            # another worker's sweep: already sent
    assert [r.published_at for r in _runs(ids)] == [later, later]

    use_settings(dataclasses.replace(settings, requeue_after_s=1.0))
    with db.session_scope() as s:
        s.execute(Run.__table__.update().values(published_at=later - dt.timedelta(days=1)))
    backlog[0] = 2                                  # a message per queued run: nothing was lost
    assert recover_and_enqueue() == [] and sent == []
    backlog[0] = None                               # the broker cannot tell: send them again

    def broker_down(ids, app=None):
        raise ConnectionError("broker down")

    monkeypatch.setattr("service.runs.enqueue", broker_down)
    with pytest.raises(RuntimeError, match=f"runs {ids[0]}, {ids[1]} could not be sent to the broker"):
        recover_and_enqueue()
    monkeypatch.setattr("service.runs.enqueue", lambda ids, app=None: sent.extend(ids))
    backlog[0] = 1                                  # one of two messages lost
    assert recover_and_enqueue() == ids and sent == ids          # due again at once
    assert recover_and_enqueue() == []
    for run_id in ids:
        assert tasks.run_simulation(run_id) == "succeeded"
        assert tasks.run_simulation(run_id) == "skipped"            # the duplicate message
    _assert_nothing_lost_or_duplicated(_runs(ids))


def test_broker_backlog_counts_the_messages_waiting(settings):
    app = create_celery(settings)
    before = broker_backlog(app, settings.queue) or 0
    enqueue([123456, 123457], app=app)
    assert broker_backlog(app, settings.queue) == before + 2
