"""Recovery, within seconds, of the runs whose messages a broker lost.

A Redis without persistence (or flushed, or replaced) comes back empty: the messages of the runs
still queued are gone, while their rows say ``queued``. Nothing in the messages that remain can
tell which were lost, so the broker gets a marker, the *epoch key* (``vmemlab:broker-epoch:<queue>``,
in the broker's own database): a key that only the workers write, and that vanishes with
everything else when Redis loses its data. Every worker looks at it every
``VMEMLAB_BROKER_CHECK_S`` (2 s):

- present: the broker kept its data since a worker wrote it; nothing to do (one EXISTS);
- missing: the broker lost its data since then (or no worker ever wrote it: a new deployment).
  The first worker to notice takes the recovery with ``SET NX`` (a lease that expires after
  ``RECOVERY_LEASE_S``, in case that worker dies mid-way), sends every queued run again
  (service.runs.resend_all_queued), then writes the key for good with what it did. The others
  see the key and do nothing.

Why this never runs a run twice: a re-sent run whose message was not lost after all (published
after the broker returned, or held by a worker when it went) is delivered twice, and the second
delivery claims nothing (service.tasks: the claim is one conditional UPDATE of the run row).

Why publishers do not write the key: the API publishing into a Redis that just came back empty
would recreate it before any worker looked, and the loss would go unseen. For a new deployment
(no key yet, its queue intact), the broker's queue is counted first: when it holds a message per
queued run nothing was lost and nothing is sent. Runs that were running keep going on their
worker; if that worker dies, the stale-heartbeat sweep (service.runs) re-queues them as before.

The worker itself reconnects within the same interval (service.celery_app's consumer retries
the broker every ``VMEMLAB_BROKER_CHECK_S`` at most, rather than kombu's default backoff up to
30 s), and the check runs on the worker's timer, so runs lost with the broker's data are sent
again, and taken, a few seconds after the broker answers again.

The embedded SQLite broker keeps its messages in a file; no check there.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Optional

from celery import Celery, bootsteps
from sqlalchemy import func, select

from .db import session_scope
from .models import Run, RunStatus, utcnow
from .runs import broker_backlog, count_resent, resend_all_queued
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

EPOCH_KEY = "vmemlab:broker-epoch:{queue}"
RECOVERY_LEASE_S = 60
SOCKET_TIMEOUT_S = 1.0
_clients: dict[str, Any] = {}
_unwatched: set[str] = set()


def epoch_key(queue: str) -> str:
    return EPOCH_KEY.format(queue=queue)


def _client(settings: Settings) -> Any:
    """A Redis client of the broker (kept: redis-py reconnects by itself), or None when the
    broker is not Redis."""
    url = settings.redis_url
    if settings.embedded_broker or not url:
        return None
    if not url.startswith(("redis://", "rediss://")):
        # a Redis reached by a socket (kombu's redis+socket://) or another broker: no epoch key
        # here, and lost messages wait for the periodic sweep (VMEMLAB_REQUEUE_AFTER_S)
        if url not in _unwatched:
            _unwatched.add(url)
            log.warning("broker check off for %s: only redis:// and rediss:// brokers are watched; runs whose "
                        "messages the broker loses are sent again after VMEMLAB_REQUEUE_AFTER_S", url.split("@")[-1])
        return None
    client = _clients.get(url)
    if client is None:
        import redis

        # short timeouts: the check runs on the worker's event loop
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S,
                                                      socket_connect_timeout=SOCKET_TIMEOUT_S)
    return client


def read_epoch(settings: Optional[Settings] = None) -> Optional[dict[str, Any]]:
    """The epoch key as health shows it: when the broker's current data began and what the
    recovery did then; None when the key is missing (a loss not yet seen by a worker, or no
    worker started yet). Raises if the broker does not answer."""
    settings = settings or get_settings()
    client = _client(settings)
    if client is None:
        return None
    raw = client.get(epoch_key(settings.queue))
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"raw": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"raw": value}


def check_broker(app: Optional[Celery] = None, settings: Optional[Settings] = None,
                 worker: str = "") -> Optional[list[int]]:
    """One look at the epoch key. Returns the ids of the runs sent again when this call found the
    key missing and did the recovery (an empty list: nothing was lost), else None (the key is
    there, another worker is recovering, the broker does not answer, or it is not Redis)."""
    import redis

    settings = settings or get_settings()
    client = _client(settings)
    if client is None:
        return None
    key = epoch_key(settings.queue)
    started = utcnow()
    lease = json.dumps({"state": "recovering", "worker": worker, "since": started.isoformat()})
    try:
        if client.exists(key) or not client.set(key, lease, nx=True, ex=RECOVERY_LEASE_S):
            return None
    except redis.RedisError as exc:   # down: the worker's consumer logs it already, and retries
        log.debug("broker check: %s", exc)
        return None
    try:
        ids, queued, backlog = _recover(app, settings)
    except Exception:
        _release(client, key, lease)      # the next check (of any worker) tries again
        raise
    epoch = json.dumps({"since": started.isoformat(), "worker": worker, "resent_runs": len(ids),
                        "queued_runs": queued, "messages_found": backlog})
    try:
        # xx: if the lease is gone, the broker lost its data again meanwhile, and the next check must see it
        client.set(key, epoch, xx=True)
    except redis.RedisError as exc:     # the lease expires: a later check sends them again (harmless)
        log.warning("broker check: the epoch key could not be written: %s", exc)
    if ids:
        log.warning("the broker came back without its messages (no key %s): sent again the %d queued run(s) "
                    "at once: %s", key, len(ids), _some(ids))
        count_resent("broker_lost", len(ids))
    else:
        log.info("broker epoch key %s written (%d queued run(s), %s message(s) in the queue: none lost)",
                 key, queued, backlog)
    return ids


def _recover(app: Optional[Celery], settings: Settings) -> tuple[list[int], int, Optional[int]]:
    with session_scope() as session:
        queued = session.scalar(select(func.count()).select_from(Run).where(Run.status == RunStatus.QUEUED.value))
    if not queued:
        return [], 0, None
    backlog = broker_backlog(app, settings.queue)   # None when the queue is gone with the data
    if backlog is not None and backlog >= queued:
        return [], queued, backlog       # a new deployment whose queue is intact
    return resend_all_queued(app, settings), queued, backlog


def _release(client: Any, key: str, lease: str) -> None:
    try:
        if client.get(key) == lease.encode():
            client.delete(key)
    except Exception as exc:  # noqa: BLE001 - the lease expires anyway
        log.debug("broker check: lease not released: %s", exc)


def _some(ids: list[int], most: int = 20) -> str:
    shown = ", ".join(map(str, ids[:most]))
    return shown if len(ids) <= most else f"{shown} and {len(ids) - most} more"


class BrokerWatch(bootsteps.StartStopStep):
    """Every worker checks the broker's epoch key every ``VMEMLAB_BROKER_CHECK_S``."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        settings = get_settings()
        if _client(settings) is None:
            return
        self.tref = worker.timer.call_repeatedly(settings.broker_check_s, _watch, (worker.app, worker.hostname),
                                                 priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


def _watch(app: Celery, hostname: str) -> None:
    try:
        check_broker(app, worker=hostname)
    except Exception:  # the database or the broker failed mid-way: the next check tries again
        log.exception("sending again the runs the broker lost failed")
