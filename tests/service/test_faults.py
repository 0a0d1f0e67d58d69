"""Faults: plugins that raise, answer nonsense or hang (in-process and in a real Celery worker),
the broker stopped and restarted under queued and running runs (PostgreSQL connections dropped
mid-request and mid-run: test_faults_postgres.py). Every test ends by checking that no run and no result is lost or
duplicated: each run is finished once (``attempts``), and a succeeded run has exactly one
``run_series`` row while a failed one has none.

Test plugins are seen the way installed ones are: tests/service/fault_plugins.py is copied into
a temporary folder with a ``*.dist-info`` advertising its classes in ``vmemlab.policies``, and
that folder goes on the path (``sys.path`` here, ``PYTHONPATH`` of a worker)."""
from __future__ import annotations

import dataclasses
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from sqlalchemy import func, select

from service import db, registry, tasks
from service.celery_app import create_celery
from service.engine import PolicyError, simulate
from service.experiments import create_experiment
from service.models import Experiment, Run, RunSeries
from service.policies import load_policy
from service.runs import enqueue
from service.scenario import load_scenario
from service.sdk import Admission, Decisions, Policy
from service.settings import Settings, use_settings
from tests.api.helpers import token_for

from . import fault_plugins
from .helpers import tiny
from .test_worker import Workers, _environment, warm_engine  # noqa: F401  (warm_engine: an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

PLUGIN_MODULE = "vmemlab_fault_plugins"


# --- helpers --------------------------------------------------------------------------------------

def _auth(settings: Settings) -> dict:
    """Headers for writes: a new admin bearer token."""
    return {"Authorization": f"Bearer {token_for(settings.database_url, 'admin', 'faults')}"}


def _wait(predicate: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str] = lambda: "") -> float:
    """Wait until ``predicate()``; return when it became true (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{logs()}")
        time.sleep(0.05)
    return time.monotonic()


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


def _experiments() -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(Experiment))


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
