"""The one Celery app, built from service.settings.

Start a worker (embedded default or full stack, the same command)::

    celery -A service.celery_app worker --loglevel=INFO --concurrency=2

Tasks get only a run id; the run row in the database is the lock and the record
(service.tasks). Messages are acknowledged after the task ends (``acks_late``) and given back if
the worker process dies, and every worker looks, every ``stale_after_s / 2`` seconds, for runs
whose worker stopped heartbeating and queues them again: a run is never lost with its worker,
and the run row makes sure it is done once. The same sweep sends again the runs still queued
``VMEMLAB_REQUEUE_AFTER_S`` after they were last sent (service.runs.unpublished_runs): a broker
that lost its messages (a Redis restarted without persistence) loses no run.

A worker whose broker goes away keeps running the simulations it has and reconnects, forever,
when the broker returns (``broker_connection_max_retries`` None), trying every
``VMEMLAB_BROKER_CHECK_S`` (``Consumer``). An acknowledgement that could not be sent makes the
broker deliver the message again; the run row turns that into a no-op. A broker that came back
without its messages is noticed by every worker within the same interval, and the queued runs are
sent again at once (service.broker_watch), rather than ``VMEMLAB_REQUEUE_AFTER_S`` later.
"""
from __future__ import annotations

import functools
import logging
import time

from celery import Celery, bootsteps
from celery.signals import worker_process_init
from celery.worker.consumer import Consumer as CeleryConsumer

from .broker_watch import BrokerWatch
from .settings import Settings, get_settings

RUN_TASK = "vmemlab.run_simulation"
log = logging.getLogger(__name__)


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if settings.embedded_broker:
        settings.data_dir.mkdir(parents=True, exist_ok=True)   # SQLite creates files, not folders
    celery = Celery("vmemlab", broker=settings.broker_url, backend=settings.result_backend,
                    include=["service.tasks"])
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue,
        task_track_started=False,
        # the run row is the record: nobody reads Celery's own result of a task
        task_ignore_result=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        # a worker that lost its broker reconnects when it returns, however long that takes, and
        # goes on with the runs it has (their messages come back at worst as no-op duplicates)
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
        timezone="UTC",
        worker_send_task_events=False,
        worker_consumer="service.celery_app:Consumer",
    )
    if settings.worker_concurrency:
        celery.conf.worker_concurrency = settings.worker_concurrency    # else Celery's: one per core
    if not settings.embedded_broker:
        # Redis hands an unacknowledged message to another worker after this long; the run row
        # turns such a duplicate into a no-op, so it only needs to be longer than most runs.
        celery.conf.broker_transport_options = {"visibility_timeout": 6 * 3600}
    celery.steps["worker"].add(RunRecovery)
    celery.steps["worker"].add(BrokerWatch)
    if settings.embedded_broker:
        _declare_embedded_queue(celery, settings.queue)
    return celery


def _declare_embedded_queue(celery: Celery, queue: str, attempts: int = 5) -> None:
    """kombu's SQLite transport declares a queue with a SELECT, then an INSERT: an API and a
    worker starting together can both insert, and the loser fails (a worker's consumer then
    never starts, and its runs stay queued). Each process declares the queue here, once, as it
    starts; the loser of that race reads the winner's row on its next try."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            with celery.connection_for_write() as connection:
                connection.default_channel.queue_declare(queue=queue)
            return
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts - 1:
                log.warning("the embedded broker's queue %s could not be declared: %s", queue, exc)
                return
            time.sleep(0.05 * (attempt + 1))


class Consumer(CeleryConsumer):
    """Celery's consumer, retrying a lost broker every ``VMEMLAB_BROKER_CHECK_S`` at most: with
    kombu's default backoff (2, 4, 6... up to 30 s) a worker found a Redis back after a 30 s
    outage only 12 s later, and the recovery of lost runs could not start before."""

    def ensure_connected(self, conn):
        every = get_settings().broker_check_s
        conn.ensure_connection = functools.partial(type(conn).ensure_connection, conn, interval_start=0,
                                                   interval_step=every, interval_max=every)
        try:
            return super().ensure_connected(conn)
        finally:
            del conn.ensure_connection


class RunRecovery(bootsteps.StartStopStep):
    """Every worker re-queues, now and then, the runs whose worker stopped heartbeating."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        interval = get_settings().recovery_interval_s
        self.tref = worker.timer.call_repeatedly(interval, _recover, (worker.app,), priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


def _recover(celery: Celery) -> None:
    from .capacity_searches import advance_and_enqueue
    from .runs import recover_and_enqueue

    try:
        recover_and_enqueue(app=celery)     # logs what it re-queued
    except Exception:  # a database or broker hiccup must not stop the worker
        log.exception("looking for runs that lost their worker or their message failed")
    advance_and_enqueue(celery)      # a search whose worker died before it queued the next probe


@worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    """A pool process must not share its parent's database connections."""
    from .db import dispose_engines

    dispose_engines(close=False)


app = create_celery()
