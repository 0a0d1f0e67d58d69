"""Faults: plugins that raise, answer nonsense or hang (in-process and in a real Celery worker),
the broker stopped and restarted under queued and running runs, PostgreSQL connections dropped
mid-request and mid-run. Every test ends by checking that no run and no result is lost or
duplicated: each run is finished once (``attempts``), and a succeeded run has exactly one
``run_series`` row while a failed one has none.

Test plugins are seen the way installed ones are: tests/service/fault_plugins.py is copied into
a temporary folder with a ``*.dist-info`` advertising its classes in ``vmemlab.policies``, and
that folder goes on the path (``sys.path`` here, ``PYTHONPATH`` of a worker)."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from sqlalchemy import create_engine, event, func, select, text

from service import db, registry, tasks
from service.celery_app import create_celery
from service.engine import PolicyError, simulate
from service.experiments import create_experiment
from service.models import Experiment, Run, RunSeries
from service.policies import load_policy
from service.runs import broker_backlog, enqueue, recover_and_enqueue, unpublished_runs
from service.scenario import load_scenario
from service.sdk import Admission, Decisions, Policy
from service.settings import Settings, use_settings
from tests.api.helpers import token_for
from tests.helpers import free_port

from . import fault_plugins
from .conftest import installed, truncate_all
from .helpers import busy, tiny
from .test_worker import Workers, _environment, warm_engine  # noqa: F401  (warm_engine: an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

PLUGIN_MODULE = "vmemlab_fault_plugins"


# --- helpers --------------------------------------------------------------------------------------

def _auth(settings: Settings) -> dict:
    """Headers for writes: a new admin bearer token."""
    return {"Authorization": f"Bearer {token_for(settings.database_url, 'admin', 'faults')}"}


def _wait(predicate: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{logs()}")
        time.sleep(0.05)


def _submit(doc: dict) -> list[int]:
    with db.session_scope() as s:
        return [r.id for r in create_experiment(s, doc).runs]


def _runs(ids) -> list[Run]:
    with db.session_scope() as s:
        return [s.get(Run, i) for i in ids]


def _all_runs() -> list[Run]:
    with db.session_scope() as s:
        return list(s.scalars(select(Run).order_by(Run.id)))


def _series_count(run_id: Optional[int] = None) -> int:
    with db.session_scope() as s:
        query = select(func.count()).select_from(RunSeries)
        if run_id is not None:
            query = query.where(RunSeries.run_id == run_id)
        return s.scalar(query)


def _finished(ids) -> bool:
    return all(r.status not in ("queued", "running") for r in _runs(ids))


def _assert_nothing_lost_or_duplicated(runs: list[Run]) -> None:
    """Every run finished exactly once: one attempt, and a series row if and only if it succeeded."""
    for run in runs:
        assert run.status in ("succeeded", "failed", "cancelled"), (run.id, run.status)
        assert run.attempts == 1, (run.id, run.attempts)
        assert _series_count(run.id) == (1 if run.status == "succeeded" else 0), run.id
        if run.status == "succeeded":
            assert run.summary and run.slowdown is not None and run.error is None
        else:
            assert run.summary is None and all(v is None for v in run.metrics.values())
    assert _series_count() == sum(r.status == "succeeded" for r in runs)



# --- test plugins, installed the way a distribution is ----------------------------------------------

@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that holds the test plugins as an installed distribution: the module and a
    dist-info with METADATA and entry_points.txt (group vmemlab.policies)."""
    folder = tmp_path_factory.mktemp("fault-plugins")
    shutil.copy(Path(fault_plugins.__file__), folder / f"{PLUGIN_MODULE}.py")
    info = folder / f"{PLUGIN_MODULE}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vmemlab-fault-plugins\nVersion: 1.0\n"
                                   "Summary: misbehaving vmemlab policies for the fault tests\n")
    (info / "entry_points.txt").write_text(
        "[vmemlab.policies]\n" + "".join(f"{name} = {PLUGIN_MODULE}:{cls}\n"
                                         for name, cls in fault_plugins.ENTRY_POINTS.items()))
    return folder


@pytest.fixture
def installed_plugins(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test plugins visible to this process (the API's check of an experiment's policies)
    for one test; undone after it."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    yield plugin_dir
    sys.modules.pop(PLUGIN_MODULE, None)


def test_the_test_plugins_load_like_installed_ones(installed_plugins):
    for name in fault_plugins.ENTRY_POINTS:
        cls = load_policy(name)
        assert cls.__module__ == PLUGIN_MODULE and cls.name == name


# --- 1. the plugin hook time limit, in the engine -----------------------------------------------------

def _hooked(hook: str, action: Callable[[], None]) -> type[Policy]:
    """A policy whose ``hook`` calls ``action`` (at the second epoch for on_epoch); its on_epoch
    asks for the plugin victim strategy under a tight limit, so that select_victims is called."""

    class Hooked(Policy):
        name = f"slow-{hook}"
        version = "0.1"

        def setup(self, host):
            if hook == "setup":
                action()
            return super().setup(host)

        def admit(self, host, vm, restart):
            if hook == "admit":
                action()
            return Admission(True)

        def on_stop(self, host, vm):
            if hook == "on_stop":
                action()

        def on_epoch(self, host):
            if hook == "on_epoch" and host.epoch >= 1:
                action()
            decisions = Decisions()
            if hook == "select_victims":
                for vm in host.running:
                    d = decisions.vm(vm.name)
                    d.victim, d.host_swap = "plugin", True
                    if host.epoch >= 1:     # below what the VM touched in the first epoch
                        d.host_limit_mb = 8
            return decisions

        def select_victims(self, host, vm, candidates, count):
            action()
            return candidates[:count]

    return Hooked


def _hook_scenario():
    doc = tiny(duration_s=2.0)
    doc["vms"][0]["events"] = [{"at_s": 0, "action": "start"}, {"at_s": 1, "action": "stop"}]
    return load_scenario(doc)[0]


HOOKS = ("setup", "admit", "on_stop", "on_epoch", "select_victims")


@pytest.mark.parametrize("hook", HOOKS)
def test_a_hook_that_runs_too_long_is_interrupted(hook):
    def sentinel(_signum, _frame):
        raise AssertionError("the previous SIGALRM handler must not run during the hook")

    previous = signal.signal(signal.SIGALRM, sentinel)
    signal.setitimer(signal.ITIMER_REAL, 300)      # somebody's timer, which must survive
    try:
        start = time.monotonic()
        with pytest.raises(PolicyError) as caught:
            simulate(_hook_scenario(), _hooked(hook, lambda: time.sleep(30))(), hook_time_limit_s=0.2)
        assert time.monotonic() - start < 20
        assert str(caught.value) == (f"policy 'slow-{hook}': {hook}() ran longer than the plugin hook "
                                     f"time limit of 0.2 s")
        assert signal.getsignal(signal.SIGALRM) is sentinel
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 200 < left < 300
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_hook_that_swallows_exceptions_is_still_interrupted(installed_plugins):
    policy = load_policy("fault-hangs").create({})
    with pytest.raises(PolicyError, match=r"policy 'fault-hangs': on_epoch\(\) ran longer .* 0.3 s"):
        simulate(_hook_scenario(), policy, hook_time_limit_s=0.3)
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_outside_the_main_thread_a_slow_hook_fails_once_it_returns():
    outcome: list[BaseException] = []

    def run():
        try:
            simulate(_hook_scenario(), _hooked("on_epoch", lambda: time.sleep(0.3))(), hook_time_limit_s=0.1)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], PolicyError)
    assert "on_epoch() ran longer than the plugin hook time limit of 0.1 s" in str(outcome[0])


def test_without_a_limit_a_slow_hook_is_waited_for():
    result = simulate(_hook_scenario(), _hooked("on_epoch", lambda: time.sleep(0.05))(), hook_time_limit_s=0)
    assert result.summary


def test_the_run_task_applies_the_plugin_time_limit(settings, installed_plugins):
    use_settings(dataclasses.replace(settings, plugin_time_limit_s=0.3, plugins_auto_enable="all"))
    ids = _submit(tiny(policies=("fault-hangs", "static")))
    assert [tasks.run_simulation(i) for i in ids] == ["failed", "succeeded"]
    hung, good = _runs(ids)
    assert hung.error == ("policy 'fault-hangs': on_epoch() ran longer than the plugin hook time limit of 0.3 s "
                          "(plugin fault-hangs 1.0)")
    _assert_nothing_lost_or_duplicated([hung, good])


def test_the_hard_time_limit_follows_the_soft_one():
    assert tasks.hard_time_limit(0) is None
    assert tasks.hard_time_limit(1) == 3
    assert tasks.hard_time_limit(10) == 15
    assert tasks.hard_time_limit(3600) == 3630


# --- 2. misbehaving plugins in a real worker --------------------------------------------------------

def test_bad_plugins_fail_their_runs_and_the_worker_goes_on(installed_plugins, tmp_path: Path):
    """One worker process (concurrency 1, embedded broker) gets, in this order, runs of plugins
    that raise, hang in Python, answer nonsense, sleep in C, and block every signal a timer
    could use, with good runs between and after them: each bad run fails naming its plugin, each
    good one succeeds, and the worker serves them all."""
    env = _environment(VMEMLAB_DATA_DIR=str(tmp_path / "var"), VMEMLAB_HEARTBEAT_S="0.2",
                       VMEMLAB_STALE_HEARTBEATS="50", VMEMLAB_PLUGIN_TIME_LIMIT_S="1",
                       VMEMLAB_RUN_TIME_LIMIT_S="4", VMEMLAB_PLUGINS_AUTO_ENABLE="all",
                       PYTHONPATH=f"{installed_plugins}:{_environment().get('PYTHONPATH', '')}".rstrip(":"))
    settings = Settings.from_env(env)
    db.upgrade(settings.database_url)
    use_settings(settings)
    with db.session_scope(settings.database_url) as session:   # the trust levels the registry records
        registry.sync(session, settings.plugins_auto_enable)
    workers = Workers(env, tmp_path)
    try:
        order = ("fault-raises", "fault-hangs", "static", "fault-nonsense", "fault-sleeps", "overcommit",
                 "fault-trust", "fault-stuck")
        ids = _submit(tiny(policies=order))
        enqueue(ids, app=create_celery(settings))
        main = workers.start("w1")
        _wait(lambda: _finished(ids), 90, "the runs to finish", workers.output)
        # the worker survived all of them: it takes a new run and succeeds
        (after,) = _submit(tiny(policies=("dynamic-memory",)))
        enqueue([after], app=create_celery(settings))
        _wait(lambda: _finished([after]), 60, "the run after the bad ones", workers.output)
        runs = dict(zip(order, _runs(ids)))
        logs = workers.output()
        assert main.poll() is None, logs

        assert runs["fault-raises"].error.startswith(
            "policy 'fault-raises' 1.0 raised RuntimeError: a plugin bug (fault test) (vmemlab_fault_plugins.py:"), logs
        assert runs["fault-raises"].error.endswith("in on_epoch)")
        assert runs["fault-hangs"].error == ("policy 'fault-hangs': on_epoch() ran longer than the plugin hook time "
                                             "limit of 1 s (plugin fault-hangs 1.0)")
        assert runs["fault-nonsense"].error == ("policy 'fault-nonsense': on_epoch() must return Decisions, got dict "
                                                "(plugin fault-nonsense 1.0)")
        assert runs["fault-sleeps"].error == ("policy 'fault-sleeps': admit() ran longer than the plugin hook time "
                                              "limit of 1 s (plugin fault-sleeps 1.0)")
        stuck = runs["fault-stuck"]
        assert stuck.error.startswith("policy 'fault-stuck' 1.0: the run exceeded the hard time limit of 6 s "
                                      "on worker w1@"), logs
        assert stuck.error.endswith("whose process was killed")
        assert runs["fault-trust"].error == (
            "policy 'fault-trust': on_epoch() changed trusts_guest (class True, instance True); a policy's trust level "
            "is fixed when it is loaded (here False) and cannot be changed by the plugin (plugin fault-trust 1.0)")
        for name in ("fault-raises", "fault-hangs", "fault-nonsense", "fault-sleeps", "fault-trust", "fault-stuck"):
            assert runs[name].status == "failed", (name, logs)
        assert runs["static"].status == runs["overcommit"].status == "succeeded", logs
        (last,) = _runs([after])
        assert last.status == "succeeded", logs
        # one pool process ran everything until the stuck plugin's was killed; a new one took over
        pools = {run.worker for run in runs.values()}
        assert len(pools) == 1 and last.worker.startswith("w1@") and last.worker not in pools
        _assert_nothing_lost_or_duplicated([*runs.values(), last])
    finally:
        workers.stop_all()
        use_settings(None)
        db.dispose_engines()


# --- 3. the broker stopped and restarted ----------------------------------------------------------------

class RedisServer:
    """A throwaway redis-server without persistence: stopping it loses every message."""

    def __init__(self, logs: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.logs = logs
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        redis = pytest.importorskip("redis")
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        log = open(self.logs / "redis.log", "ab")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    pytest.fail("the throwaway redis-server did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def full_stack(postgres_migrated: str, plugin_dir: Path, tmp_path: Path):
    """PostgreSQL (the session's database, emptied), a throwaway Redis and the settings a worker
    gets: lost messages are sent again 1 s after they were last sent, by a recovery sweep every
    2.5 s (half the 5 s after which a heartbeat is stale)."""
    pytest.importorskip("redis")
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


def _experiments() -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(Experiment))


def test_redis_stopped_and_restarted_loses_no_run(full_stack):
    from service.app import create_app

    settings, workers, redis_server = full_stack
    client = create_app(settings).test_client()
    headers = _auth(settings)
    workers.start("r1")

    posted = client.post("/api/v1/experiments", json={**busy(8), "epoch_s": 0.25}, headers=headers)
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


# --- 4. PostgreSQL connections dropped ---------------------------------------------------------------

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
