"""Recovery after the broker loses its queue (service.broker_watch): the epoch key, in-process on
the tests' Redis, and end to end with a real worker and a throwaway redis-server that is stopped
and started again empty. The queued runs whose messages were lost must be sent again and finish
within 15 s of Redis answering again (they used to wait ``VMEMLAB_REQUEUE_AFTER_S``, 300 s), each
run executed once."""
from __future__ import annotations

import dataclasses
import os
import secrets
import time
from typing import Any, Iterator
from pathlib import Path

import pytest

from service import db, tasks
from service.broker_watch import check_broker, epoch_key, read_epoch
from service.celery_app import create_celery
from service.runs import broker_backlog, enqueue, request_cancel
from service.settings import Settings, use_settings

from .conftest import REDIS_URL, require_redis, truncate_all
from .helpers import busy, tiny
from .redis_server import RedisServer
from .test_faults import _runs, _series_count, _submit, _wait
from .test_worker import Workers, _environment, warm_engine  # noqa: F401  (warm_engine: an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

RECOVERY_TARGET_S = 15.0
# how long Redis stays away; the 30 s outage: VMEMLAB_TEST_BROKER_OUTAGE_S=30
OUTAGE_S = float(os.environ.get("VMEMLAB_TEST_BROKER_OUTAGE_S", "8"))


def _resent(reason: str, registry=None) -> float:
    from prometheus_client import REGISTRY

    return (registry or REGISTRY).get_sample_value("vmemlab_runs_resent_total", {"reason": reason}) or 0.0


# --- the epoch key, in-process ----------------------------------------------------------------------

@pytest.fixture
def own_queue(settings: Settings) -> Iterator[tuple[Settings, Any, Any, str]]:
    """The shared Redis with a queue of this test's own (settings, Celery app, Redis client,
    queue name); its keys are deleted afterwards."""
    require_redis(REDIS_URL)
    import redis

    queue = f"vmemlab-test-{secrets.token_hex(4)}"
    settings = dataclasses.replace(settings, redis_url=REDIS_URL, queue=queue)
    use_settings(settings)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield settings, create_celery(settings), client, queue
    finally:
        client.delete(epoch_key(queue), *client.keys(f"*{queue}*"))


def test_an_emptied_broker_is_noticed_and_its_queued_runs_are_sent_again_once(own_queue):
    settings, app, client, queue = own_queue
    key = epoch_key(queue)
    assert read_epoch(settings) is None
    assert check_broker(app, settings, worker="w1@a") == []        # a new deployment: nothing queued
    assert read_epoch(settings)["resent_runs"] == 0
    assert check_broker(app, settings, worker="w2@b") is None      # the key is there: nothing to do

    ids = _submit(tiny(policies=("static", "esx")))
    enqueue(ids, app=app)
    client.delete(key)                  # no key, but a message per queued run: nothing lost
    assert check_broker(app, settings, worker="w1@a") == [] and broker_backlog(app, queue) == 2

    client.delete(key, queue)           # what a Redis restarted empty looks like
    client.set(key, "another worker's lease", ex=60)
    assert check_broker(app, settings, worker="w1@a") is None      # another worker is recovering
    client.delete(key)
    before = _resent("broker_lost")
    published = [r.published_at for r in _runs(ids)]
    assert check_broker(app, settings, worker="w1@a") == ids
    assert check_broker(app, settings, worker="w2@b") is None      # once, however many workers look
    assert broker_backlog(app, queue) == 2
    assert all(r.published_at is not None and (p is None or r.published_at > p)
               for r, p in zip(_runs(ids), published))
    epoch = read_epoch(settings)
    assert epoch["worker"] == "w1@a" and epoch["resent_runs"] == 2 and epoch["queued_runs"] == 2
    assert _resent("broker_lost") == before + 2
    for run_id in ids:                 # the re-sent message and a surviving duplicate: one run each
        assert tasks.run_simulation(run_id) == "succeeded"
        assert tasks.run_simulation(run_id) == "skipped"
    assert all(r.status == "succeeded" and r.attempts == 1 and _series_count(r.id) == 1 for r in _runs(ids))


def test_a_broker_that_cannot_take_the_runs_leaves_the_recovery_to_the_next_check(own_queue, monkeypatch):
    settings, app, client, queue = own_queue
    ids = _submit(tiny())

    def broker_down(ids, app=None):
        raise ConnectionError("broker down")

    monkeypatch.setattr("service.runs.enqueue", broker_down)
    with pytest.raises(RuntimeError, match=f"runs {ids[0]} could not be sent"):
        check_broker(app, settings, worker="w1@a")
    assert client.get(epoch_key(queue)) is None           # the lease is given back
    monkeypatch.undo()
    assert check_broker(app, settings, worker="w1@a") == ids


def test_a_worker_retries_a_lost_broker_every_check_interval(tmp_path: Path):
    """Not kombu's backoff (2, 4, 6... 30 s), which found a Redis back after a 30 s outage 12 s late."""
    from service.celery_app import Consumer

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db'}", broker_check_s=1.5)
    use_settings(settings)
    try:
        consumer = Consumer.__new__(Consumer)          # only what ensure_connected reads
        consumer.app = create_celery(settings)
        consumer.first_connection_attempt, consumer.broker_connection_retry_attempt = False, 0
        retries: dict = {}

        class Connection:
            def ensure_connection(self, *args, **kwargs):
                retries.update(kwargs)
                return self

        connection = Connection()
        assert consumer.ensure_connected(connection) is connection
        assert (retries["interval_start"], retries["interval_step"], retries["interval_max"]) == (0, 1.5, 1.5)
        assert "ensure_connection" not in vars(connection)
    finally:
        use_settings(None)


# --- end to end: a real worker, Redis stopped and started again empty -----------------------------------

@pytest.fixture
def stack(postgres_migrated: str, tmp_path: Path):
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    truncate_all(postgres_migrated)
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    # VMEMLAB_REQUEUE_AFTER_S stays at its 300 s: only the epoch key can bring the runs back in time
    env = _environment(DATABASE_URL=postgres_migrated, REDIS_URL=redis_server.url,
                       VMEMLAB_DATA_DIR=str(tmp_path / "var"), VMEMLAB_HEARTBEAT_S="0.1",
                       VMEMLAB_STALE_HEARTBEATS="100", PROMETHEUS_MULTIPROC_DIR=str(metrics))
    settings = Settings.from_env(env)
    assert settings.requeue_after_s == 300 and settings.broker_check_s == 2
    use_settings(settings)
    workers = Workers(env, tmp_path)
    try:
        yield settings, workers, redis_server, metrics
    finally:
        workers.stop_all()
        redis_server.stop()
        use_settings(None)
        db.dispose_engines()


def test_runs_lost_with_the_broker_are_sent_again_and_finish_within_15_s(stack):
    from prometheus_client import CollectorRegistry, multiprocess

    from service.app import create_app

    settings, workers, redis_server, metrics = stack
    app = create_celery(settings)
    workers.start("w1")
    _wait(lambda: "resent_runs" in (read_epoch(settings) or {}), 60, "the worker to write the epoch key",
          workers.output)

    (long_run,) = _submit(busy(60))        # holds the worker's only slot, so the others wait in Redis
    enqueue([long_run], app=app)
    _wait(lambda: _runs([long_run])[0].progress > 0.02, 60, "the long run to make progress", workers.output)
    lost = _submit(tiny(policies=("static", "overcommit", "esx", "kvm")))
    enqueue(lost, app=app)
    assert broker_backlog(app, settings.queue) == len(lost)

    redis_server.stop()                     # the queued messages are gone with it
    with db.session_scope() as s:           # free the slot while the broker is away
        request_cancel(s, long_run)
    _wait(lambda: _runs([long_run])[0].status == "cancelled", 30, "the long run to stop", workers.output)
    time.sleep(OUTAGE_S)                    # the worker retries its broker meanwhile
    assert all(r.status == "queued" for r in _runs(lost))
    redis_server.start()                    # same port, empty
    back = time.monotonic()

    done = _wait(lambda: all(r.status not in ("queued", "running") for r in _runs(lost)), 120,
                 "the lost runs to finish", workers.output)
    recovery_s = done - back
    print(f"\nruns lost with the broker: {len(lost)} re-sent and finished {recovery_s:.1f} s after Redis returned "
          f"(away {OUTAGE_S:g} s)")
    runs = _runs(lost)
    assert all(r.status == "succeeded" and r.attempts == 1 and _series_count(r.id) == 1 for r in runs), workers.output()
    assert recovery_s < RECOVERY_TARGET_S, f"{recovery_s:.1f} s\n{workers.output()}"
    assert _runs([long_run])[0].attempts == 1 and _runs([long_run])[0].status == "cancelled"

    logs = workers.output()
    assert "the broker came back without its messages" in logs and "sent again the 4 queued run(s)" in logs
    assert "sent again runs still queued" not in logs          # not the 300 s sweep
    epoch = read_epoch(settings)
    assert epoch["resent_runs"] == len(lost) and epoch["worker"].startswith("w1@")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics))
    assert _resent("broker_lost", registry) == len(lost)
    health = create_app(settings).test_client().get("/api/v1/health")
    assert health.status_code == 200, health.get_json()
    assert health.get_json()["broker"]["epoch"]["resent_runs"] == len(lost)
