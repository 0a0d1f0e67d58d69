"""The run task. It gets a run id, nothing else; the run row is the lock and the record.

1. Claim: one conditional UPDATE moves the run from queued (or from running with a stale
   heartbeat: its worker died) to running and adds one to ``attempts``. If it matches no row
   the run is finished, cancelled or held by a live worker, and this delivery is a no-op: a
   message delivered twice gives one result.
2. The attempt number is the lease: every later write is conditional on ``status = 'running'
   AND attempts = <ours>``. A worker that lost its run (declared dead, then came back) finds its
   writes match nothing and stops without touching the run.
3. The worker refuses a run whose pinned plugin version is not the one installed.
4. While the simulation runs, progress and heartbeat are written at most every heartbeat
   interval, each in its own short transaction, and the same write reads ``cancel_requested``.
5. The result (summary, metric columns, series, events, status) is written in one transaction.

Faults:

- Every database write and read of a run is retried a few times with backoff (about 3 s in
  all) when the connection fails (``OperationalError``, a connection invalidated): each is one
  short transaction, so a retry either repeats what was rolled back or, if only the answer to a
  commit was lost, finds the attempt's own write and goes on. A heartbeat that still cannot be
  written is skipped (the simulation goes on); a result that still cannot be stored leaves the
  run ``running``, and once its heartbeat is stale another worker runs it again. Never half a
  result: the result is one transaction.
- Each call of a plugin hook is limited to ``VMEMLAB_PLUGIN_TIME_LIMIT_S`` (the engine's
  HookTimer): a hook that overruns fails the run with an error naming the plugin and the hook.
- With ``VMEMLAB_RUN_TIME_LIMIT_S`` the task has a soft time limit (the run fails with a clear
  error) and a hard one a grace period later (``hard_time_limit``): a plugin stuck where no
  signal reaches it gets its pool process killed, and the worker marks the run failed.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Optional

from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request
from sqlalchemy import exists, or_, select, update
from sqlalchemy.exc import DBAPIError, DisconnectionError

from .celery_app import RUN_TASK, app
from .db import first_line, is_connection_failure, session_scope, with_db_retry
from .engine import ENGINE_VERSION, RunCancelled, simulate
from .engine.hooks import HookTimer, describe_failure
from .models import Experiment, PluginRegistration, Run, RunSeries, RunStatus, utcnow
from .models.runs import metrics_from_summary
from .policies import BrokenPolicyError, UnknownPolicyError, load_policy
from .scenario import ScenarioValidationError, load_scenario
from .sdk import PolicyParameterError
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

QUEUED, RUNNING = RunStatus.QUEUED.value, RunStatus.RUNNING.value
SUCCEEDED, FAILED, CANCELLED = RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value


class LeaseLost(RuntimeError):
    """Another attempt owns the run now (this worker was taken for dead): stop, write nothing."""


@dataclass(frozen=True)
class Lease:
    run_id: int
    attempt: int
    worker: str


# --- the state machine --------------------------------------------------------------------------

def claim(run_id: int, worker: str, settings: Settings) -> Optional[Lease]:
    """Take the run if it is queued, or running with a heartbeat older than ``stale_after_s``."""
    now = utcnow()
    return with_db_retry(f"run {run_id}: claim", _claim, run_id, worker, settings, now)


def _claim(run_id: int, worker: str, settings: Settings, now: dt.datetime, *, retried: bool) -> Optional[Lease]:
    stale = now - dt.timedelta(seconds=settings.stale_after_s)
    with session_scope() as session:
        row = session.execute(
            update(Run)
            .where(Run.id == run_id,
                   or_(Run.status == QUEUED,
                       (Run.status == RUNNING) & (Run.attempts < settings.max_attempts)
                       & or_(Run.heartbeat_at < stale, Run.heartbeat_at.is_(None))))
            .values(status=RUNNING, worker=worker, started_at=now, heartbeat_at=now, progress=0.0,
                    attempts=Run.attempts + 1, error=None, engine_version=ENGINE_VERSION)
            .returning(Run.attempts)
            .execution_options(synchronize_session=False)).first()
        if row is None and retried:
            # the earlier try's commit may have gone through: then the run is ours, started at `now`
            row = session.execute(select(Run.attempts).where(
                Run.id == run_id, Run.status == RUNNING, Run.worker == worker, Run.started_at == now)).first()
    return Lease(run_id, row.attempts, worker) if row is not None else None


def _fence(lease: Lease):
    return (Run.id == lease.run_id, Run.status == RUNNING, Run.attempts == lease.attempt)


def heartbeat(lease: Lease, progress: Optional[float] = None) -> bool:
    """Write the heartbeat (and progress); return whether cancellation was requested.
    Raises LeaseLost if the run is no longer this attempt's."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = min(max(float(progress), 0.0), 1.0)
    return with_db_retry(f"run {lease.run_id}: heartbeat", _heartbeat, lease, values)


def _heartbeat(lease: Lease, values: dict[str, Any], *, retried: bool) -> bool:
    with session_scope() as session:
        row = session.execute(update(Run).where(*_fence(lease)).values(**values)
                              .returning(Run.cancel_requested)
                              .execution_options(synchronize_session=False)).first()
    if row is None:
        raise LeaseLost(f"run {lease.run_id}: attempt {lease.attempt} no longer holds the run")
    return bool(row.cancel_requested)


def finish(lease: Lease, status: str, error: Optional[str] = None) -> bool:
    """End the attempt as failed or cancelled. False if the lease was lost (nothing written)."""
    now = utcnow()
    return with_db_retry(f"run {lease.run_id}: finish as {status}", _finish, lease, status, error, now)


def _finish(lease: Lease, status: str, error: Optional[str], now: dt.datetime, *, retried: bool) -> bool:
    with session_scope() as session:
        done = session.execute(update(Run).where(*_fence(lease))
                               .values(status=status, error=error, finished_at=now, heartbeat_at=now)
                               .execution_options(synchronize_session=False))
        if not done.rowcount and retried:
            return _ours(session, lease, status, now)
        return bool(done.rowcount)


def _ours(session, lease: Lease, status: str, finished_at: dt.datetime) -> bool:
    """Whether the run ended as ``status`` by this very attempt's write (whose commit went
    through while its answer was lost)."""
    return session.execute(select(Run.id).where(
        Run.id == lease.run_id, Run.status == status, Run.attempts == lease.attempt,
        Run.worker == lease.worker, Run.finished_at == finished_at)).first() is not None


class UnstorableResult(ValueError):
    """A summary or events that are not JSON (a plugin's decision carried something else)."""


def store_result(lease: Lease, summary: dict[str, Any], series: dict[str, Any], events: list) -> None:
    """Summary, metric columns, series, events and status in one transaction, or nothing.
    Raises UnstorableResult, before touching the database, if summary or events are not JSON."""
    now = utcnow()
    summary = json_safe(summary)
    metrics = metrics_from_summary(summary)
    events = json_safe(events)
    try:
        json.dumps([summary, events], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UnstorableResult(str(exc)) from None
    with_db_retry(f"run {lease.run_id}: store the result", _store_result, lease, summary, metrics, series, events, now)


def _store_result(lease: Lease, summary: dict[str, Any], metrics: dict[str, Any], series: dict[str, Any],
                  events: list, now: dt.datetime, *, retried: bool) -> None:
    with session_scope() as session:
        done = session.execute(
            update(Run).where(*_fence(lease))
            .values(status=SUCCEEDED, finished_at=now, heartbeat_at=now, progress=1.0, error=None,
                    summary=summary, engine_version=ENGINE_VERSION, **metrics)
            .execution_options(synchronize_session=False))
        if not done.rowcount:
            if retried and _ours(session, lease, SUCCEEDED, now) and session.scalar(
                    select(exists().where(RunSeries.run_id == lease.run_id))):
                log.info("run %s: the result was stored by the earlier try (its commit's answer was lost)",
                         lease.run_id)
                return
            raise LeaseLost(f"run {lease.run_id}: attempt {lease.attempt} lost the run before storing its result")
        session.add(RunSeries.pack(lease.run_id, series, events))


# --- the run ----------------------------------------------------------------------------------

class _Monitor:
    """The simulation's progress and should_stop callbacks: one heartbeat write at most every
    ``heartbeat_s``, which also reads the cancellation flag."""

    def __init__(self, lease: Lease, interval_s: float):
        self.lease = lease
        self.interval_s = interval_s
        self.fraction: Optional[float] = None
        self.cancel = False
        self.last = time.monotonic()

    def beat(self) -> None:
        try:
            self.cancel = heartbeat(self.lease, self.fraction)
        except (DBAPIError, DisconnectionError) as exc:
            if not is_connection_failure(exc):
                raise
            # the simulation goes on; the result is stored if the database is back by then
            log.warning("run %s: heartbeat not written, the database is unavailable (%s)",
                        self.lease.run_id, first_line(exc))
        self.last = time.monotonic()

    def progress(self, fraction: float) -> None:
        self.fraction = fraction

    def should_stop(self) -> bool:
        if time.monotonic() - self.last >= self.interval_s:
            self.beat()
        return self.cancel


def execute_run(run_id: int, worker: Optional[str] = None, settings: Optional[Settings] = None) -> str:
    """Run the simulation of ``run_id`` if it can be claimed; return what became of it:
    ``succeeded``, ``failed``, ``cancelled``, or ``skipped`` (not claimed: finished, cancelled,
    held by a live worker, or no such run) or ``lost`` (another attempt took it over)."""
    settings = settings or get_settings()
    worker = worker or default_worker_name()
    lease = claim(run_id, worker, settings)
    if lease is None:
        log.info("run %s: not claimed (finished, cancelled, held by a live worker, or unknown)", run_id)
        return "skipped"
    log.info("run %s: attempt %s on %s", run_id, lease.attempt, worker)
    try:
        return _execute(lease, settings)
    except LeaseLost as exc:
        log.warning("%s", exc)
        return "lost"


def _read_run(run_id: int, *, retried: bool) -> tuple[str, str, dict[str, Any], bool, dict[str, Any], Optional[bool]]:
    with session_scope() as session:
        run = session.get(Run, run_id)
        experiment = session.get(Experiment, run.experiment_id)
        approved = session.scalar(select(PluginRegistration.trusts_guest).where(PluginRegistration.name == run.policy_name))
        return (run.policy_name, run.policy_version, dict(run.params), run.cancel_requested, experiment.scenario,
                approved)


def _execute(lease: Lease, settings: Settings) -> str:
    name, pinned, params, cancel, document, approved_trust = with_db_retry(
        f"run {lease.run_id}: read", _read_run, lease.run_id)
    if cancel:
        return CANCELLED if finish(lease, CANCELLED) else "lost"

    try:
        cls = load_policy(name)
    except (UnknownPolicyError, BrokenPolicyError) as exc:
        return _fail(lease, f"worker {lease.worker} cannot load plugin {name} (run needs version {pinned}): {exc}")
    if cls.version != pinned:
        return _fail(lease, f"worker {lease.worker} has plugin {name} version {cls.version}, run needs {pinned}; "
                            "restart the workers after installing another version of a plugin")
    # the trust level the registry recorded for this plugin, or the class's before any of its code ran
    trusts_guest = bool(cls.trusts_guest) if approved_trust is None else approved_trust
    try:
        scenario, _ = load_scenario(document, base_dir=settings.trace_dir)
    except ScenarioValidationError as exc:
        return _fail(lease, f"the experiment's scenario cannot be loaded on worker {lease.worker}: {exc}")
    try:
        policy = HookTimer(name, settings.plugin_time_limit_s or None).call("create", cls.create, params)
    except PolicyParameterError as exc:
        return _fail(lease, str(exc))
    except Exception as exc:         # the plugin's own constructor
        log.exception("run %s: creating the policy failed", lease.run_id)
        return _fail(lease, describe_failure(exc, cls))

    monitor = _Monitor(lease, settings.heartbeat_s)
    monitor.beat()
    try:
        result = simulate(scenario, policy, progress=monitor.progress, should_stop=monitor.should_stop,
                          hook_time_limit_s=settings.plugin_time_limit_s or None, trusts_guest=trusts_guest)
    except LeaseLost:
        raise
    except RunCancelled as exc:
        log.info("run %s: %s", lease.run_id, exc)
        return CANCELLED if finish(lease, CANCELLED) else "lost"
    except SoftTimeLimitExceeded:
        return _fail(lease, f"policy {name!r} {pinned}: the run exceeded the time limit of "
                            f"{settings.run_time_limit_s:g} s on worker {lease.worker}")
    except Exception as exc:
        log.exception("run %s failed", lease.run_id)
        return _fail(lease, describe_failure(exc, cls))
    try:
        store_result(lease, result.summary, result.series, result.events)
    except LeaseLost:
        raise
    except UnstorableResult as exc:             # e.g. a decision's free text that is not text
        return _fail(lease, f"policy {name!r} {pinned}: the run's summary or events cannot be stored as JSON "
                            f"({exc}); check what the plugin puts in its decisions' reasons and metrics")
    except (DBAPIError, DisconnectionError) as exc:
        if not is_connection_failure(exc):
            log.exception("run %s: storing the result failed", lease.run_id)
            return _fail(lease, f"storing the result failed: {first_line(exc)}")
        # not the run's fault: it stays running, and runs again once its heartbeat is stale
        log.error("run %s: the result could not be stored, the database is unavailable (%s); the run "
                  "will be run again", lease.run_id, first_line(exc))
        raise
    except Exception as exc:
        log.exception("run %s: storing the result failed", lease.run_id)
        return _fail(lease, f"storing the result failed: {first_line(exc)}")
    log.info("run %s: succeeded", lease.run_id)
    return SUCCEEDED


def _fail(lease: Lease, message: str) -> str:
    log.error("run %s failed: %s", lease.run_id, message)
    return FAILED if finish(lease, FAILED, message) else "lost"


# --- helpers ----------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """JSON without NaN or infinities (PostgreSQL's json refuses them): those become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):      # numpy scalars
        return json_safe(value.item())
    return value


# --- the Celery task ------------------------------------------------------------------------------

def hard_time_limit(soft_s: float) -> Optional[float]:
    """The hard time limit of a run task: the soft one and a grace period (half of it, 2 to 30 s)
    to write the failure. None without a soft limit."""
    if not soft_s:
        return None
    return soft_s + min(30.0, max(2.0, soft_s / 2))


def fail_killed_run(run_id: int, worker: str, limit_s: float) -> bool:
    """After the pool process ``worker`` running ``run_id`` was killed at the hard time limit
    (in the worker's main process): fail the run if that process still held it."""
    def step(*, retried: bool) -> bool:
        with session_scope() as session:
            run = session.execute(select(Run.policy_name, Run.policy_version).where(Run.id == run_id)).first()
            if run is None:
                return False
            message = (f"policy {run.policy_name!r} {run.policy_version}: the run exceeded the hard time limit of "
                       f"{limit_s:g} s on worker {worker}, whose process was killed")
            now = utcnow()
            done = session.execute(update(Run).where(Run.id == run_id, Run.status == RUNNING, Run.worker == worker)
                                   .values(status=FAILED, error=message, finished_at=now, heartbeat_at=now)
                                   .execution_options(synchronize_session=False))
            return bool(done.rowcount)
    failed = with_db_retry(f"run {run_id}: fail after the hard time limit", step)
    if failed:
        log.error("run %s failed: killed at the hard time limit of %g s on %s", run_id, limit_s, worker)
    return failed


class RunRequest(Request):
    """The run task's request in the worker's main process: when the pool process running it is
    killed at the hard time limit, the run is marked failed (else it would stay ``running``, be
    taken for lost once its heartbeat is stale, and run, and be killed, again and again)."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return
        try:
            fail_killed_run(int(self.args[0]), default_worker_name(f"{self.hostname}", self.worker_pid), timeout)
        except Exception:
            log.exception("marking the run of task %s failed after its hard time limit failed", self.id)


def default_worker_name(hostname: Optional[str] = None, pid: Optional[int] = None) -> str:
    return f"{hostname or socket.gethostname()} pid {pid or os.getpid()}"


_RUN_TIME_LIMIT_S = get_settings().run_time_limit_s


@app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, Request=RunRequest,
          soft_time_limit=_RUN_TIME_LIMIT_S or None, time_limit=hard_time_limit(_RUN_TIME_LIMIT_S))
def run_simulation(self, run_id: int) -> str:
    """Simulate run ``run_id``; see the module docstring. A capacity search's probe that ended
    makes the search go on (its next probe, queued for any worker)."""
    outcome = execute_run(run_id, worker=default_worker_name(self.request.hostname))
    if outcome != "lost":
        from .capacity_searches import advance_and_enqueue

        advance_and_enqueue(app, run_id=run_id)
    return outcome
