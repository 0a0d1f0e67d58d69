"""Runs outside the worker: enqueue, cancel, recover runs that lost their worker or their message,
read series, compare. Plain functions over a session, used by the API, the CLI and the workers."""
from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any, Iterable, Optional, Sequence

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from .db import session_scope
from .models import METRIC_COLUMNS, Run, RunSeries, RunStatus, utcnow
from .policies import DEFAULT_POLICY
from .settings import Settings, get_settings

QUEUED, RUNNING = RunStatus.QUEUED.value, RunStatus.RUNNING.value
CANCELLED, SUCCEEDED = RunStatus.CANCELLED.value, RunStatus.SUCCEEDED.value
FAILED = RunStatus.FAILED.value
log = logging.getLogger(__name__)


def enqueue(run_ids: Iterable[int], app=None) -> list[str]:
    """Send one task per run id; return the Celery task ids. Call it after the transaction that
    created the runs commits, so that a worker never looks for a run that is not there yet."""
    from .celery_app import RUN_TASK

    if app is None:
        from .celery_app import app
    return [app.send_task(RUN_TASK, args=[int(run_id)]).id for run_id in run_ids]


def enqueue_group(run_ids: Iterable[int], app=None) -> None:
    """Send the runs of a sweep or a search as one Celery group: every message goes to the queue
    at once, so that each idle worker, on any machine, takes the next one."""
    from celery import group

    from .celery_app import RUN_TASK

    if app is None:
        from .celery_app import app
    ids = [int(run_id) for run_id in run_ids]
    if ids:
        group(app.signature(RUN_TASK, args=[run_id]) for run_id in ids).apply_async()


def request_cancel(session: Session, run_id: int) -> Optional[Run]:
    """Cancel a run: a queued one at once, a running one at the worker's next check (within about
    a heartbeat interval). A finished run is left as it is. Returns the run (refreshed), or None
    if there is no such run. The caller commits."""
    now = utcnow()
    done = session.execute(
        update(Run).where(Run.id == run_id, Run.status == QUEUED)
        .values(status=CANCELLED, cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False))
    if not done.rowcount:
        session.execute(
            update(Run).where(Run.id == run_id, Run.status == RUNNING)
            .values(cancel_requested=True).execution_options(synchronize_session=False))
    run = session.get(Run, run_id)
    if run is not None:
        session.refresh(run)
    return run


def cancel_unfinished(session: Session, runs: Iterable[Run]) -> int:
    """``request_cancel`` each run not yet finished; how many were asked to stop."""
    unfinished = [run.id for run in runs if not run.finished]
    for run_id in unfinished:
        request_cancel(session, run_id)
    return len(unfinished)


def recover_stale_runs(session: Session, settings: Optional[Settings] = None,
                       now: Optional[dt.datetime] = None) -> list[int]:
    """Runs marked running whose heartbeat is older than ``settings.stale_after_s`` lost their
    worker: each goes back to queued (or to cancelled, if a cancellation was asked for; or to
    failed, after ``settings.max_attempts`` attempts) and the re-queued ids are returned, to be
    enqueued after the caller commits. Each transition is a conditional
    update, so when several workers sweep at once each run is re-queued once."""
    settings = settings or get_settings()
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=settings.stale_after_s)
    stale = (Run.status == RUNNING, or_(Run.heartbeat_at < cutoff, Run.heartbeat_at.is_(None)))
    requeued = []
    for run_id in session.scalars(select(Run.id).where(*stale).order_by(Run.id)).all():
        cancelled = session.execute(
            update(Run).where(Run.id == run_id, Run.cancel_requested.is_(True), *stale)
            .values(status=CANCELLED, finished_at=now).execution_options(synchronize_session=False))
        if cancelled.rowcount:
            continue
        row = session.execute(select(Run.attempts, Run.worker, Run.policy_name, Run.policy_version)
                              .where(Run.id == run_id)).first()
        if row is not None and row.attempts >= settings.max_attempts:
            # a plugin that kills its process or hangs without heartbeats would take worker after worker
            message = (f"policy {row.policy_name!r} {row.policy_version}: the run lost its worker {row.attempts} times "
                       f"(the last: {row.worker}), killed or stuck without a heartbeat; it is not run again "
                       f"(VMEMLAB_MAX_ATTEMPTS={settings.max_attempts})")
            session.execute(update(Run).where(Run.id == run_id, Run.attempts == row.attempts, *stale)
                            .values(status=FAILED, finished_at=now, error=message)
                            .execution_options(synchronize_session=False))
            continue
        queued = session.execute(
            update(Run).where(Run.id == run_id, *stale)
            .values(status=QUEUED, progress=0.0, published_at=now).execution_options(synchronize_session=False))
        if queued.rowcount:
            requeued.append(run_id)
    return requeued


def _send_again_cutoff(settings: Settings, now: dt.datetime) -> dt.datetime:
    """A queued run last sent to the broker before this is due to be sent again."""
    return now - dt.timedelta(seconds=settings.requeue_after_s)


def _due_again(cutoff: dt.datetime) -> tuple:
    """Queued, and last sent (``published_at``, else ``created_at``) before ``cutoff``."""
    return Run.status == QUEUED, func.coalesce(Run.published_at, Run.created_at) < cutoff


def unpublished_runs(session: Session, settings: Optional[Settings] = None,
                     now: Optional[dt.datetime] = None) -> list[int]:
    """Runs still queued more than ``settings.requeue_after_s`` after their task was last sent
    to the broker (``published_at``, else ``created_at``): the broker may have lost the message
    (a Redis restarted without persistence). Each one's ``published_at`` becomes ``now`` and its
    id is returned, to be enqueued again after the caller commits. A conditional update, so that
    when several workers sweep at once each run is sent once; and if the message was not lost
    after all, the second delivery is a no-op (the run row is the lock)."""
    settings = settings or get_settings()
    now = now or utcnow()
    due = _due_again(_send_again_cutoff(settings, now))
    ids = []
    for run_id in session.scalars(select(Run.id).where(*due).order_by(Run.id)).all():
        done = session.execute(update(Run).where(Run.id == run_id, *due).values(published_at=now)
                               .execution_options(synchronize_session=False))
        if done.rowcount:
            ids.append(run_id)
    return ids


def broker_backlog(app=None, queue: Optional[str] = None) -> Optional[int]:
    """How many messages wait in the run queue of the broker, or None if it cannot tell."""
    if app is None:
        from .celery_app import app
    queue = queue or get_settings().queue
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=2.0)
            return int(connection.default_channel.queue_declare(queue=queue, passive=True).message_count)
    except Exception as exc:  # noqa: BLE001 - unknown (or no such queue, as in a Redis restarted
        # empty): the caller sends again to be safe
        log.info("cannot count the messages in queue %s: %s", queue, exc)
        return None


def recover_and_enqueue(app=None, settings: Optional[Settings] = None) -> list[int]:
    """One sweep of a worker's recovery: ``recover_stale_runs``, then, if the broker's queue holds
    fewer messages than there are queued runs (some were lost), ``unpublished_runs``; then
    enqueue them all. (A long but intact backlog is not sent again.) A run that cannot be sent
    (the broker is down) is due again at the next sweep; what was not sent is raised after the
    rest was tried."""
    settings = settings or get_settings()
    now = utcnow()
    cutoff = _send_again_cutoff(settings, now)
    with session_scope() as session:
        stale = recover_stale_runs(session, settings, now)
        due = session.scalar(select(func.count()).select_from(Run).where(*_due_again(cutoff)))
        queued = session.scalar(select(func.count()).select_from(Run).where(Run.status == QUEUED))
    lost: list[int] = []
    if due:
        backlog = broker_backlog(app, settings.queue)
        if backlog is None or backlog < queued - len(stale):
            with session_scope() as session:
                lost = unpublished_runs(session, settings, now)
    sent = send_or_mark_due(stale + lost, now, cutoff, app)
    if stale:
        log.warning("re-queued runs whose worker stopped heartbeating: %s", ", ".join(map(str, stale)))
        count_resent("stale_heartbeat", len(stale))
    if lost:
        log.warning("sent again runs still queued %g s after they were last sent (the broker may have lost "
                    "their messages): %s", settings.requeue_after_s, ", ".join(map(str, lost)))
        count_resent("still_queued", len(lost))
    return sent


def send_or_mark_due(ids: list[int], now: dt.datetime, cutoff: dt.datetime, app=None) -> list[int]:
    """Enqueue ``ids`` (their ``published_at`` was just set to ``now``). A run that cannot be
    sent (the broker is down) gets ``published_at = cutoff``, which makes it due at the next
    recovery sweep; what was not sent is raised after the rest was tried."""
    sent, failure = [], None
    for run_id in ids:
        try:
            enqueue([run_id], app=app)
            sent.append(run_id)
        except Exception as exc:  # the broker is down: send the rest next time
            failure = exc
            break
    unsent = [run_id for run_id in ids if run_id not in sent]
    if unsent:
        with session_scope() as session:
            session.execute(update(Run).where(Run.id.in_(unsent), Run.status == QUEUED, Run.published_at == now)
                            .values(published_at=cutoff).execution_options(synchronize_session=False))
        raise RuntimeError(f"runs {', '.join(map(str, unsent))} could not be sent to the broker: {failure}") from failure
    return sent


def resend_all_queued(app=None, settings: Optional[Settings] = None) -> list[int]:
    """Send again every queued run, at once: the broker lost its messages (service.broker_watch
    found it emptied). One conditional UPDATE marks them sent now, so that the periodic sweep does
    not send them a second time; a run whose message was in fact still there (published after the
    broker came back) gets a second delivery, a no-op (the run row is the lock)."""
    settings = settings or get_settings()
    now = utcnow()
    with session_scope() as session:
        ids = sorted(session.scalars(update(Run).where(Run.status == QUEUED).values(published_at=now)
                                     .returning(Run.id).execution_options(synchronize_session=False)).all())
    return send_or_mark_due(ids, now, _send_again_cutoff(settings, now), app)


def count_resent(reason: str, count: int) -> None:
    """For `/metrics`: how many runs the recovery sent again, and why (service.prometheus)."""
    try:
        from .prometheus import RUNS_RESENT

        RUNS_RESENT.labels(reason).inc(count)
    except Exception as exc:  # noqa: BLE001 - a metric never stops a recovery
        log.warning("metrics: re-sent runs not counted: %s", exc)


def run_series(session: Session, run_id: int) -> Optional[dict[str, Any]]:
    """A succeeded run's per-epoch series (service.engine's ``RunResult.series``), or None."""
    row = session.get(RunSeries, run_id)
    return row.unpack() if row is not None else None


def run_events(session: Session, run_id: int) -> Optional[list[dict[str, Any]]]:
    """A succeeded run's event log (VM starts, refusals, OOMs...), or None."""
    row = session.get(RunSeries, run_id)
    return list(row.events) if row is not None else None


# --- comparisons -------------------------------------------------------------------------------

def compare(runs: Sequence[Run], baseline_policy: str = DEFAULT_POLICY,
            baseline_run_id: Optional[int] = None) -> dict[str, Any]:
    """Runs side by side, with deltas against a baseline run.

    The baseline is ``baseline_run_id`` if given, else the first succeeded run of
    ``baseline_policy``; with none, deltas are None. For each run: its identity (policy, versions,
    seed, fingerprint, experiment), the metric columns, ``deltas`` (run minus baseline) and
    ``ratios`` (run / baseline) of every metric both have, and per VM (matched by name) the
    slowdown, state and the slowdown's delta and ratio against the same VM in the baseline.
    """
    baseline = None
    if baseline_run_id is not None:
        baseline = next((r for r in runs if r.id == baseline_run_id), None)
        if baseline is None:
            raise ValueError(f"baseline run {baseline_run_id} is not among the runs compared")
    else:
        baseline = next((r for r in runs if r.policy_name == baseline_policy and r.status == SUCCEEDED), None)
    base_metrics = baseline.metrics if baseline is not None and baseline.status == SUCCEEDED else None
    base_vms = _vm_slowdowns(baseline) if base_metrics is not None else {}

    rows = []
    for run in runs:
        metrics = run.metrics if run.status == SUCCEEDED else {name: None for name in METRIC_COLUMNS}
        vms = {}
        for name, (slowdown, state) in _vm_slowdowns(run).items():
            base = base_vms.get(name, (None, None))[0]
            vms[name] = {"slowdown": slowdown, "state": state,
                         "slowdown_delta": _delta(slowdown, base), "slowdown_ratio": _ratio(slowdown, base)}
        rows.append({
            "run_id": run.id,
            "experiment_id": run.experiment_id,
            "policy": run.policy_name,
            "policy_version": run.policy_version,
            "engine_version": run.engine_version,
            "params": run.params,
            "seed": run.seed,
            "fingerprint": run.fingerprint,
            "status": run.status,
            "is_baseline": baseline is not None and run.id == baseline.id,
            "metrics": metrics,
            "deltas": {k: _delta(v, base_metrics.get(k)) if base_metrics else None for k, v in metrics.items()},
            "ratios": {k: _ratio(v, base_metrics.get(k)) if base_metrics else None for k, v in metrics.items()},
            "vms": vms,
        })
    return {
        "baseline": None if baseline is None else {"run_id": baseline.id, "policy": baseline.policy_name,
                                                   "status": baseline.status},
        "metrics": list(METRIC_COLUMNS),
        "same_configuration": len({(r.fingerprint, r.engine_version) for r in runs}) <= 1,
        "runs": rows,
    }


def _vm_slowdowns(run: Optional[Run]) -> dict[str, tuple[Optional[float], Optional[str]]]:
    if run is None or run.status != SUCCEEDED or not run.summary:
        return {}
    return {vm["name"]: (vm.get("slowdown"), vm.get("state")) for vm in run.summary.get("vms", [])}


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _delta(value: Any, base: Any) -> Optional[float]:
    a, b = _number(value), _number(base)
    return None if a is None or b is None else a - b


def _ratio(value: Any, base: Any) -> Optional[float]:
    a, b = _number(value), _number(base)
    return None if a is None or b is None or b == 0 else a / b
