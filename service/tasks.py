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
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Optional

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import or_, update

from .celery_app import RUN_TASK, app
from .db import session_scope
from .engine import ENGINE_VERSION, PolicyError, RunCancelled, simulate
from .models import METRIC_COLUMNS, Experiment, Run, RunSeries, RunStatus, utcnow
from .policies import BrokenPolicyError, UnknownPolicyError, load_policy
from .scenario import ScenarioValidationError, load_scenario
from .sdk import Policy, PolicyParameterError
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
    stale = now - dt.timedelta(seconds=settings.stale_after_s)
    with session_scope() as session:
        row = session.execute(
            update(Run)
            .where(Run.id == run_id,
                   or_(Run.status == QUEUED,
                       (Run.status == RUNNING) & or_(Run.heartbeat_at < stale, Run.heartbeat_at.is_(None))))
            .values(status=RUNNING, worker=worker, started_at=now, heartbeat_at=now, progress=0.0,
                    attempts=Run.attempts + 1, error=None, engine_version=ENGINE_VERSION)
            .returning(Run.attempts)
            .execution_options(synchronize_session=False)).first()
    return Lease(run_id, row.attempts, worker) if row is not None else None


def _fence(lease: Lease):
    return (Run.id == lease.run_id, Run.status == RUNNING, Run.attempts == lease.attempt)


def heartbeat(lease: Lease, progress: Optional[float] = None) -> bool:
    """Write the heartbeat (and progress); return whether cancellation was requested.
    Raises LeaseLost if the run is no longer this attempt's."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = min(max(float(progress), 0.0), 1.0)
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
    with session_scope() as session:
        done = session.execute(update(Run).where(*_fence(lease))
                               .values(status=status, error=error, finished_at=now, heartbeat_at=now)
                               .execution_options(synchronize_session=False))
        return bool(done.rowcount)


def store_result(lease: Lease, summary: dict[str, Any], series: dict[str, Any], events: list) -> None:
    """Summary, metric columns, series, events and status in one transaction, or nothing."""
    now = utcnow()
    summary = _finite(summary)
    metrics = {column: _metric(summary, path) for column, path in METRIC_COLUMNS.items()}
    with session_scope() as session:
        done = session.execute(
            update(Run).where(*_fence(lease))
            .values(status=SUCCEEDED, finished_at=now, heartbeat_at=now, progress=1.0, error=None,
                    summary=summary, engine_version=ENGINE_VERSION, **metrics)
            .execution_options(synchronize_session=False))
        if not done.rowcount:
            raise LeaseLost(f"run {lease.run_id}: attempt {lease.attempt} lost the run before storing its result")
        session.add(RunSeries.pack(lease.run_id, series, _finite(events)))


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
        self.cancel = heartbeat(self.lease, self.fraction)
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


def _execute(lease: Lease, settings: Settings) -> str:
    with session_scope() as session:
        run = session.get(Run, lease.run_id)
        experiment = session.get(Experiment, run.experiment_id)
        name, pinned, params, cancel = run.policy_name, run.policy_version, dict(run.params), run.cancel_requested
        document = experiment.scenario
    if cancel:
        return CANCELLED if finish(lease, CANCELLED) else "lost"

    try:
        cls = load_policy(name)
    except (UnknownPolicyError, BrokenPolicyError) as exc:
        return _fail(lease, f"worker {lease.worker} cannot load plugin {name} (run needs version {pinned}): {exc}")
    if cls.version != pinned:
        return _fail(lease, f"worker {lease.worker} has plugin {name} version {cls.version}, run needs {pinned}")
    try:
        scenario, _ = load_scenario(document, base_dir=settings.trace_dir)
    except ScenarioValidationError as exc:
        return _fail(lease, f"the experiment's scenario cannot be loaded on worker {lease.worker}: {exc}")
    try:
        policy = cls.create(params)
    except PolicyParameterError as exc:
        return _fail(lease, str(exc))

    monitor = _Monitor(lease, settings.heartbeat_s)
    monitor.beat()
    try:
        result = simulate(scenario, policy, progress=monitor.progress, should_stop=monitor.should_stop)
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
    except Exception as exc:
        log.exception("run %s: storing the result failed", lease.run_id)
        return _fail(lease, f"storing the result failed: {type(exc).__name__}: {exc}")
    log.info("run %s: succeeded", lease.run_id)
    return SUCCEEDED


def _fail(lease: Lease, message: str) -> str:
    log.error("run %s failed: %s", lease.run_id, message)
    return FAILED if finish(lease, FAILED, message) else "lost"


def describe_failure(exc: BaseException, cls: type[Policy]) -> str:
    """An error message that names the plugin, and where in its code it failed if it did."""
    if isinstance(exc, (PolicyError, PolicyParameterError)):
        return f"{exc} (plugin {cls.name} {cls.version})"
    text = f"{type(exc).__name__}: {exc}"
    modules = {c.__module__ for c in cls.__mro__ if c.__module__ and not c.__module__.startswith(("service.", "builtins"))}
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if any(_same_module(f.filename, m) for m in modules)]
    if frames:
        where = frames[-1]
        return (f"policy {cls.name!r} {cls.version} raised {text} "
                f"({os.path.basename(where.filename)}:{where.lineno} in {where.name})")
    return f"{text} (while running policy {cls.name!r} {cls.version})"


def _same_module(filename: str, module: str) -> bool:
    import sys

    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None)
    return path is not None and os.path.abspath(path) == os.path.abspath(filename)


def default_worker_name(hostname: Optional[str] = None) -> str:
    return f"{hostname or socket.gethostname()} pid {os.getpid()}"


# --- helpers ----------------------------------------------------------------------------------

def _finite(value: Any) -> Any:
    """JSON without NaN or infinities (PostgreSQL's json refuses them): those become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):      # numpy scalars
        return _finite(value.item())
    return value


def _metric(summary: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


# --- the Celery task ------------------------------------------------------------------------------

@app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
          soft_time_limit=get_settings().run_time_limit_s or None)
def run_simulation(self, run_id: int) -> str:
    """Simulate run ``run_id``; see the module docstring."""
    return execute_run(run_id, worker=default_worker_name(self.request.hostname))
