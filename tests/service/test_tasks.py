"""The run task in-process (the Celery task object called directly), on SQLite and PostgreSQL:
the run row is the lock and the record; a result is written whole or not at all."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import func, select, update

from plugins.static import StaticPolicy
from service import db, tasks
from service.engine import simulate
from service.experiments import create_experiment
from service.models import METRIC_COLUMNS, Run, RunSeries
from service.runs import compare, recover_stale_runs, request_cancel, run_events, run_series
from service.scenario import load_scenario
from service.tasks import execute_run, run_simulation

from .helpers import busy, tiny


def _experiment(doc) -> list[int]:
    with db.session_scope() as s:
        return [r.id for r in create_experiment(s, doc).runs]


def _run(run_id: int) -> Run:
    with db.session_scope() as s:
        return s.get(Run, run_id)


def _series_rows(run_id: int) -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(RunSeries).where(RunSeries.run_id == run_id))


def _set(run_id: int, **values) -> None:
    with db.session_scope() as s:
        s.execute(update(Run).where(Run.id == run_id).values(**values))


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_run_succeeds_with_summary_columns_and_series(settings):
    (run_id,) = _experiment(tiny(policies=("overcommit",)))
    assert run_simulation(run_id) == "succeeded"
    run = _run(run_id)
    assert run.status == "succeeded" and run.attempts == 1 and run.progress == 1.0 and run.error is None
    assert run.worker and run.engine_version
    assert run.created_at <= run.started_at <= run.heartbeat_at and run.started_at <= run.finished_at
    assert run.finished_at.tzinfo is not None
    for column, path in METRIC_COLUMNS.items():
        value = run.summary
        for key in path:
            value = value[key]
        assert getattr(run, column) == value, column
    assert run.peak_used_mb > 0 and run.vms_refused == 0

    # the stored result is the engine's, bit for bit (a run is a pure function of its inputs)
    with db.session_scope() as s:
        doc = s.get(Run, run_id).experiment.scenario
        series, events = run_series(s, run_id), run_events(s, run_id)
    scenario, _ = load_scenario(doc)
    direct = simulate(scenario, tasks.load_policy("overcommit").create(run.params))
    assert series == direct.series
    assert events == direct.events
    assert run.summary == direct.summary


def test_a_second_delivery_is_a_no_op(settings):
    (run_id,) = _experiment(tiny())
    assert run_simulation(run_id) == "succeeded"
    first = _run(run_id)
    assert run_simulation(run_id) == "skipped"
    again = _run(run_id)
    assert (again.attempts, again.finished_at, again.worker) == (1, first.finished_at, first.worker)
    assert _series_rows(run_id) == 1
    assert run_simulation(123456) == "skipped"      # no such run


def test_a_worker_with_another_plugin_version_refuses_the_run(settings):
    (run_id,) = _experiment(tiny())
    _set(run_id, policy_version="0.9")
    assert execute_run(run_id, worker="w1") == "failed"
    run = _run(run_id)
    assert run.status == "failed"
    assert run.error == (f"worker w1 has plugin static version {StaticPolicy.version}, run needs 0.9; "
                         "restart the workers after installing another version of a plugin")
    assert run.summary is None and run.slowdown is None and _series_rows(run_id) == 0


def test_a_plugin_that_raises_fails_the_run_naming_the_plugin(settings, monkeypatch):
    class Exploding(StaticPolicy):
        def on_epoch(self, host):
            return 1 / 0

    monkeypatch.setattr(tasks, "load_policy", lambda name: Exploding)
    (run_id,) = _experiment(tiny())
    assert execute_run(run_id) == "failed"
    error = _run(run_id).error
    assert error.startswith(f"policy 'static' {StaticPolicy.version} raised ZeroDivisionError: division by zero")
    assert "test_tasks.py" in error and "in on_epoch" in error
    assert _series_rows(run_id) == 0


def test_cancel_before_start(settings):
    (run_id,) = _experiment(tiny())
    with db.session_scope() as s:
        assert request_cancel(s, run_id).status == "cancelled"
    assert run_simulation(run_id) == "skipped"
    run = _run(run_id)
    assert run.status == "cancelled" and run.attempts == 0 and run.finished_at is not None
    assert _series_rows(run_id) == 0
    with db.session_scope() as s:                    # cancelling again changes nothing
        assert request_cancel(s, run_id).status == "cancelled"
        assert request_cancel(s, 987654) is None


def test_cancel_stops_a_running_simulation_promptly(settings):
    (run_id,) = _experiment(busy(600))               # minutes of wall time if not stopped
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(execute_run(run_id)))
    worker.start()
    _wait(lambda: _run(run_id).progress > 0, what="progress")
    asked = time.monotonic()
    with db.session_scope() as s:
        assert request_cancel(s, run_id).status == "running"
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert time.monotonic() - asked < 5
    run = _run(run_id)
    assert outcome == ["cancelled"] and run.status == "cancelled" and run.cancel_requested
    assert 0 < run.progress < 0.1 and run.summary is None and _series_rows(run_id) == 0


def test_a_worker_that_lost_its_run_writes_nothing(settings):
    """Taken for dead (heartbeat stale), its run re-claimed by another worker: when the first
    worker comes back it must not touch the run."""
    (run_id,) = _experiment(busy(600))
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(execute_run(run_id, worker="slow")))
    worker.start()
    _wait(lambda: _run(run_id).progress > 0, what="progress")
    _set(run_id, attempts=Run.attempts + 1, worker="other")     # what another worker's claim does
    worker.join(timeout=30)
    assert outcome == ["lost"]
    run = _run(run_id)
    assert (run.status, run.worker, run.attempts) == ("running", "other", 2)
    assert _series_rows(run_id) == 0


def test_a_result_is_stored_whole_or_not_at_all(settings, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(RunSeries, "pack", broken)
    (run_id,) = _experiment(tiny())
    assert execute_run(run_id) == "failed"
    run = _run(run_id)
    assert run.status == "failed" and "storing the result failed" in run.error
    assert run.summary is None and all(v is None for v in run.metrics.values())
    assert _series_rows(run_id) == 0


def test_a_run_whose_worker_died_is_reclaimed_once(settings):
    (run_id,) = _experiment(tiny())
    now = dt.datetime.now(dt.timezone.utc)
    # a live worker holds it: nobody else may take it
    _set(run_id, status="running", attempts=1, worker="dead", heartbeat_at=now)
    assert execute_run(run_id, worker="w2") == "skipped"
    # its heartbeat goes stale: the next delivery takes it over
    _set(run_id, heartbeat_at=now - dt.timedelta(seconds=settings.stale_after_s + 1))
    assert execute_run(run_id, worker="w2") == "succeeded"
    run = _run(run_id)
    assert (run.status, run.attempts, run.worker) == ("succeeded", 2, "w2")


def test_recovery_requeues_stale_runs_once_and_honours_cancellation(settings):
    ids = _experiment(tiny(policies=("static", "esx", "kvm")))
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=settings.stale_after_s + 1)
    _set(ids[0], status="running", attempts=1, heartbeat_at=old)
    _set(ids[1], status="running", attempts=1, heartbeat_at=old, cancel_requested=True)
    _set(ids[2], status="running", attempts=1, heartbeat_at=dt.datetime.now(dt.timezone.utc))
    with db.session_scope() as s:
        assert recover_stale_runs(s) == [ids[0]]
    with db.session_scope() as s:
        assert recover_stale_runs(s) == []            # a second sweep finds nothing
    assert [_run(i).status for i in ids] == ["queued", "cancelled", "running"]
    assert execute_run(ids[0]) == "succeeded" and _run(ids[0]).attempts == 2


def test_a_run_that_keeps_losing_its_worker_fails_after_the_last_attempt(settings):
    """A plugin that kills its process, or hangs in C code without heartbeats, must not take
    worker after worker: after VMEMLAB_MAX_ATTEMPTS the run fails, naming the policy."""
    (run_id,) = _experiment(tiny())
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=settings.stale_after_s + 1)
    _set(run_id, status="running", attempts=settings.max_attempts, worker="w3", heartbeat_at=old)
    assert execute_run(run_id, worker="w4") == "skipped"          # a late redelivery cannot take it
    with db.session_scope() as s:
        assert recover_stale_runs(s) == []
    run = _run(run_id)
    assert run.status == "failed" and run.attempts == settings.max_attempts and _series_rows(run_id) == 0
    assert run.error.startswith(f"policy 'static' {StaticPolicy.version}: the run lost its worker 3 times (the last: w3)")
    assert "VMEMLAB_MAX_ATTEMPTS=3" in run.error


def test_a_plugin_whose_constructor_raises_fails_the_run_naming_it(settings, monkeypatch):
    class Unbuildable(StaticPolicy):
        def __init__(self, **params):
            raise KeyError("missing-config")

    monkeypatch.setattr(tasks, "load_policy", lambda name: Unbuildable)
    (run_id,) = _experiment(tiny())
    assert execute_run(run_id) == "failed"
    run = _run(run_id)
    assert run.status == "failed" and run.error.startswith(f"policy 'static' {StaticPolicy.version} raised KeyError")
    assert "in __init__" in run.error and _series_rows(run_id) == 0


def test_a_result_that_is_not_json_fails_the_run_without_sql_in_the_error(settings, monkeypatch):
    from service.sdk import Admission

    class Odd(StaticPolicy):
        def admit(self, host, vm, restart):
            return Admission(False, reason={"a set", "is not JSON"})

    monkeypatch.setattr(tasks, "load_policy", lambda name: Odd)
    (run_id,) = _experiment(tiny())
    assert execute_run(run_id) == "failed"
    run = _run(run_id)
    assert run.error.startswith(f"policy 'static' {StaticPolicy.version}: the run's summary or events cannot be stored")
    assert "SQL" not in run.error and "UPDATE" not in run.error and run.summary is None and _series_rows(run_id) == 0


def test_compare_against_the_static_baseline(settings):
    ids = _experiment(tiny(policies=("overcommit", "static", "dynamic-memory")))
    for run_id in ids:
        assert run_simulation(run_id) == "succeeded"
    with db.session_scope() as s:
        runs = [s.get(Run, i) for i in ids]
        result = compare(runs)
    assert result["baseline"] == {"run_id": ids[1], "policy": "static", "status": "succeeded"}
    assert result["metrics"] == list(METRIC_COLUMNS)
    rows = {row["policy"]: row for row in result["runs"]}
    assert rows["static"]["is_baseline"] and not rows["overcommit"]["is_baseline"]
    assert rows["static"]["deltas"].keys() == set(METRIC_COLUMNS)
    assert all(v in (0.0, None) for v in rows["static"]["deltas"].values())
    over, base = rows["overcommit"], rows["static"]
    assert over["deltas"]["peak_used_mb"] == pytest.approx(over["metrics"]["peak_used_mb"] - base["metrics"]["peak_used_mb"])
    assert over["deltas"]["vms_refused"] == over["metrics"]["vms_refused"] - base["metrics"]["vms_refused"]
    # the static host fits one VM: the other was refused, so it has no slowdown to compare
    assert set(over["vms"]) == {"a", "b"}
    refused = [name for name, vm in base["vms"].items() if vm["state"] == "refused"]
    assert len(refused) == 1 and over["vms"][refused[0]]["slowdown_delta"] is None
    ran = ({"a", "b"} - set(refused)).pop()
    assert over["vms"][ran]["slowdown_delta"] == pytest.approx(
        over["vms"][ran]["slowdown"] - base["vms"][ran]["slowdown"])

    with db.session_scope() as s:                     # no baseline among the runs: no deltas
        result = compare([s.get(Run, ids[0])])
    assert result["baseline"] is None and result["runs"][0]["deltas"].keys() == set(METRIC_COLUMNS)
    assert all(v is None for v in result["runs"][0]["deltas"].values())
