"""Real Celery workers in subprocesses: ``celery -A service.celery_app worker``, configured only
through the environment. The embedded default (SQLite database, SQLite broker) end to end; a
worker killed mid-run and a new worker that finishes the run exactly once; and the full stack
(PostgreSQL and Redis) when both servers are reachable."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from sqlalchemy import func, select

from service import db
from service.celery_app import create_celery
from service.experiments import create_experiment
from service.models import Run, RunSeries
from service.runs import enqueue
from service.settings import Settings, use_settings

from .conftest import REDIS_URL, require_redis, truncate_all
from .helpers import busy, tiny

ROOT = Path(__file__).resolve().parents[2]
# kombu's SQLAlchemy transport still uses a loader strategy SQLAlchemy 2.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


class Workers:
    """Starts workers with a given environment; kills whatever is left at the end."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "service.celery_app", "worker", "--loglevel=INFO",
             "--concurrency=1", "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and its pool processes, as a crashed machine would."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:       # the test is over: no need for a warm shutdown
            if proc.poll() is None:
                self.kill(proc)

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.glob("*.log")))


def _environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VMEMLAB_") and k not in ("DATABASE_URL", "REDIS_URL")}
    if "VMEMLAB_NUMBA_CACHE_DIR" in os.environ:
        env["VMEMLAB_NUMBA_CACHE_DIR"] = os.environ["VMEMLAB_NUMBA_CACHE_DIR"]
    # the tests' short stale times need a hook limit below them (settings refuse the default 10 s)
    env["VMEMLAB_PLUGIN_TIME_LIMIT_S"] = "1"
    env.update(values)
    return env


def _wait(predicate: Callable[[], bool], timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{workers.output()}")
        time.sleep(0.1)


def _run(run_id: int) -> Run:
    with db.session_scope() as s:
        return s.get(Run, run_id)


def _series_rows() -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(RunSeries))


@pytest.fixture(scope="module", autouse=True)
def warm_engine() -> None:
    """Compile (or load from the on-disk cache) the engine once, so workers start warm."""
    from service.engine import simulate
    from service.policies import load_policy
    from service.scenario import load_scenario

    simulate(load_scenario(tiny())[0], load_policy("static").create({}))


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Settings, Workers]]:
    """Nothing configured but a data folder: SQLite database, SQLite broker and results."""
    # stale after 6 s: long enough that a loaded machine (one epoch taking seconds of wall time)
    # does not make a live worker look dead
    env = _environment(VMEMLAB_DATA_DIR=str(tmp_path / "var"), VMEMLAB_HEARTBEAT_S="0.2",
                       VMEMLAB_STALE_HEARTBEATS="30")
    settings = Settings.from_env(env)
    assert settings.embedded_broker and settings.database_url.startswith("sqlite:///")
    db.upgrade(settings.database_url)
    use_settings(settings)
    workers = Workers(env, tmp_path)
    try:
        yield settings, workers
    finally:
        workers.stop_all()
        use_settings(None)
        db.dispose_engines()


def _submit(doc: dict) -> list[int]:
    with db.session_scope() as s:
        return [r.id for r in create_experiment(s, doc).runs]


def test_embedded_worker_runs_an_experiment(embedded):
    settings, workers = embedded
    ids = _submit(tiny(policies=("static", "overcommit", "dynamic-memory")))
    app = create_celery(settings)
    enqueue(ids + ids[:1], app=app)                 # one run delivered twice
    workers.start("w1")
    _wait(lambda: all(_run(i).status == "succeeded" for i in ids), 60, "the runs to succeed", workers)
    runs = [_run(i) for i in ids]
    assert all(r.attempts == 1 and r.worker.startswith("w1@") for r in runs), workers.output()
    assert all(r.slowdown is not None and r.summary for r in runs)
    assert _series_rows() == 3
    # the duplicate message is consumed as a no-op
    _wait(lambda: "not claimed" in workers.output(), 30, "the duplicate delivery", workers)
    assert _run(ids[0]).attempts == 1 and _series_rows() == 3


def test_a_killed_worker_loses_nothing_and_the_run_finishes_once(embedded):
    settings, workers = embedded
    (run_id,) = _submit(busy(20))                    # several seconds of wall time
    enqueue([run_id], app=create_celery(settings))
    first = workers.start("w1")
    _wait(lambda: _run(run_id).progress >= 0.15, 60, "the first worker to make progress", workers)
    workers.kill(first)
    killed = _run(run_id)
    assert killed.status == "running" and killed.worker.startswith("w1@") and killed.progress < 1

    workers.start("w2")
    _wait(lambda: _run(run_id).status not in ("running", "queued"), 90, "the run to finish", workers)
    run = _run(run_id)
    assert run.status == "succeeded", workers.output()
    assert run.attempts == 2 and run.worker.startswith("w2@")
    assert _series_rows() == 1
    assert "re-queued runs whose worker stopped heartbeating" in workers.output()


def test_full_stack_postgresql_and_redis(postgres_migrated: str, tmp_path: Path):
    require_redis(REDIS_URL)
    import redis
    queue = f"vmemlab-test-{secrets.token_hex(4)}"
    env = _environment(DATABASE_URL=postgres_migrated, REDIS_URL=REDIS_URL, VMEMLAB_QUEUE=queue,
                       VMEMLAB_DATA_DIR=str(tmp_path / "var"), VMEMLAB_HEARTBEAT_S="0.2")
    settings = Settings.from_env(env)
    assert not settings.embedded_broker and settings.broker_url == REDIS_URL
    use_settings(settings)
    truncate_all(postgres_migrated)
    workers = Workers(env, tmp_path)
    task_ids: list[str] = []
    try:
        ids = _submit(tiny(policies=("static", "esx")))
        task_ids = enqueue(ids, app=create_celery(settings))
        workers.start("pg1")
        _wait(lambda: all(_run(i).status == "succeeded" for i in ids), 60, "the runs to succeed", workers)
        assert all(_run(i).attempts == 1 for i in ids) and _series_rows() == 2
    finally:
        workers.stop_all()
        use_settings(None)
        db.dispose_engines()
        client = redis.Redis.from_url(REDIS_URL)
        ours = [key for key in client.scan_iter(match=f"*{queue}*")]
        client.delete(*ours, *(f"celery-task-meta-{task_id}" for task_id in task_ids))
