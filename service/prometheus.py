"""Prometheus metrics, scraped at ``/metrics``.

Two sources, because the API and the workers may run on different machines:

- what a process sees happen, kept by prometheus-client: the API's requests (by route pattern,
  never by URL, so that ids do not make a series each) and, in the Celery workers, each run that
  ends (its duration, the references it simulated) and the runs their recovery sent again.
  gunicorn's workers and Celery's pool are several processes, so when ``PROMETHEUS_MULTIPROC_DIR``
  is set each process writes its values to files there and a scrape adds them up
  (prometheus-client's multiprocess mode). ``vmemlab serve``, ``worker`` and ``up`` set it to
  ``<data dir>/prometheus`` unless it is set already: the API's scrape then includes the workers'
  values whenever they share the data folder (``vmemlab up``, docker-compose's ``data`` volume).
  Files are named by host and pid, so that containers sharing the folder never write to one file.
- the state of the whole service, read from the database and the broker at scrape time: runs by
  status, the queue's depth, the workers' heartbeats. These are right whichever process answers.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any, Iterator, Optional

from celery.signals import task_postrun
from prometheus_client import values as _values

from .serving import METRICS_DIR_ENV as ENV, process_id

log = logging.getLogger(__name__)


# before any metric exists: the class chosen here makes every value of this process
if os.environ.get(ENV):
    _values.ValueClass = _values.MultiProcessValue(process_id)
MULTIPROCESS = bool(getattr(_values.ValueClass, "_multiprocess", False))

from prometheus_client import (  # noqa: E402 - after the value class is chosen
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

REQUESTS = Counter("vmemlab_http_requests", "HTTP requests answered, by route pattern, method and status",
                   ["method", "route", "status"])
LATENCY = Histogram("vmemlab_http_request_duration_seconds", "Time to answer an HTTP request, by route pattern",
                    ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
IN_PROGRESS = Gauge("vmemlab_http_requests_in_progress", "HTTP requests being answered now",
                    multiprocess_mode="livesum")
RUN_DURATION = Histogram("vmemlab_run_duration_seconds",
                         "Wall-clock time of the runs a worker ended, from start to end, by status",
                         ["status"], buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200))
REFERENCES = Counter("vmemlab_references_simulated",
                     "Memory references simulated by the runs that succeeded (rate() gives references per second)")
RUNS_RESENT = Counter("vmemlab_runs_resent",
                      "Queued runs a worker sent to the broker again, by reason: broker_lost (the broker came back "
                      "emptied), stale_heartbeat (their worker died), still_queued (VMEMLAB_REQUEUE_AFTER_S passed)",
                      ["reason"])
REFERENCE_RATE = Histogram("vmemlab_run_references_per_second",
                           "References each succeeded run simulated per second of its wall-clock time",
                           buckets=(1e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7, 1e8))


# --- the scrape ---------------------------------------------------------------------------------------

def scrape(sessions: Any, celery: Any = None, queue: Optional[str] = None) -> bytes:
    """The text exposition: every process's values (or this process's alone outside multiprocess
    mode) and the service's state from the database and the broker."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)          # this process's own values
    registry.register(ServiceState(sessions, celery, queue))
    return generate_latest(registry)


class ServiceState:
    """Runs by status, queue depth and worker heartbeats, read when scraped."""

    def __init__(self, sessions: Any, celery: Any = None, queue: Optional[str] = None):
        self.sessions, self.celery, self.queue = sessions, celery, queue

    def collect(self) -> Iterator[Any]:
        from sqlalchemy import func, select

        from .models import Run
        from .models.runs import RunStatus

        runs = GaugeMetricFamily("vmemlab_runs", "Runs in the database, by status", labels=["status"])
        beats = GaugeMetricFamily("vmemlab_worker_heartbeat_age_seconds",
                                  "Seconds since the newest heartbeat of each worker running a run", labels=["worker"])
        up = GaugeMetricFamily("vmemlab_database_up", "Whether the scrape could read the database")
        try:
            session = self.sessions()
            try:
                counts = dict(session.execute(select(Run.status, func.count()).group_by(Run.status)).all())
                latest = session.execute(select(Run.worker, func.max(Run.heartbeat_at))
                                         .where(Run.status == RunStatus.RUNNING.value, Run.worker.is_not(None))
                                         .group_by(Run.worker)).all()
            finally:
                session.close()
        except Exception as exc:  # noqa: BLE001 - a scrape still answers, with the database down
            log.warning("metrics: cannot read the database: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for status in RunStatus:
            runs.add_metric([status.value], counts.get(status.value, 0))
        now = dt.datetime.now(dt.timezone.utc)
        for worker, beat in latest:
            if beat is not None:
                beat = beat if beat.tzinfo else beat.replace(tzinfo=dt.timezone.utc)
                beats.add_metric([worker], max((now - beat).total_seconds(), 0.0))
        yield from (up, runs, beats)
        if self.celery is not None:
            from .runs import broker_backlog

            depth = broker_backlog(self.celery, self.queue)
            if depth is not None:
                yield GaugeMetricFamily("vmemlab_queue_depth", "Run messages waiting in the broker's queue",
                                        value=depth)


# --- the API: requests -------------------------------------------------------------------------------

def observe_request(method: str, route: str, status: str, seconds: float) -> None:
    """One answered request (also of the answers service.api.response_cache sends without Flask)."""
    REQUESTS.labels(method, route, status).inc()
    LATENCY.labels(method, route).observe(seconds)


def register_metrics(app: Any) -> None:
    """``GET /metrics`` and the request metrics of every other route."""
    from flask import Response, g, request

    @app.before_request
    def _started() -> None:
        g.metrics_started = time.perf_counter()
        IN_PROGRESS.inc()

    @app.teardown_request
    def _ended(_exc: Optional[BaseException] = None) -> None:
        if getattr(g, "metrics_started", None) is not None:
            IN_PROGRESS.dec()

    @app.after_request
    def _count(response: Any) -> Any:
        started = getattr(g, "metrics_started", None)
        if started is not None and request.endpoint != "prometheus_metrics":
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            observe_request(request.method, route, str(response.status_code), time.perf_counter() - started)
        return response

    def metrics_view() -> Any:
        state = app.extensions["vmemlab"]
        return Response(scrape(state.sessions, state.celery, state.settings.queue), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "prometheus_metrics", metrics_view, methods=["GET"])


# --- the workers: runs that end -------------------------------------------------------------------------

def observe_run(run_id: int, outcome: Any) -> None:
    """After a run task: its duration and references, if this attempt ended the run."""
    if outcome not in ("succeeded", "failed", "cancelled"):
        return
    from .db import session_scope
    from .models import Run

    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            return
        wall_s, summary = run.wall_s, run.summary
    if wall_s is None:
        return
    RUN_DURATION.labels(outcome).observe(wall_s)
    if outcome == "succeeded" and isinstance(summary, dict):
        refs = sum(int(vm.get("refs_done") or 0) for vm in summary.get("vms") or [] if isinstance(vm, dict))
        REFERENCES.inc(refs)
        if wall_s > 0:
            REFERENCE_RATE.observe(refs / wall_s)


@task_postrun.connect(weak=False)
def _after_task(sender: Any = None, args: Any = None, kwargs: Any = None, retval: Any = None, **_: Any) -> None:
    """In a Celery worker (``vmemlab worker`` imports this module with ``--include``)."""
    from .celery_app import RUN_TASK

    if getattr(sender, "name", None) != RUN_TASK:
        return
    run_id = args[0] if args else (kwargs or {}).get("run_id")
    try:
        observe_run(int(run_id), retval)
    except Exception as exc:  # noqa: BLE001 - metrics never fail a run
        log.warning("metrics: run %s not counted: %s", run_id, exc)
