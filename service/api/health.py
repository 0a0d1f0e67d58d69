"""``/api/v1/health``: can the service do its work? The database (``SELECT 1``), the broker (a
connection with a short timeout) and the workers, each reported; 200 when the database and the
broker answer, 503 otherwise, with a ``message`` naming what does not answer. Missing workers do
not make the API unhealthy (runs wait in the queue), but are reported.

On Redis the broker check also shows the broker's epoch key (service.broker_watch): since when
the broker has held its data, and how many queued runs a worker sent again when it found the
broker emptied; ``null`` while a loss is not yet recovered (or before any worker started).

``change_feed`` is this process's view of PostgreSQL's change notifications (service.change_feed):
``live`` while it serves kept answers, ``off`` on SQLite. It never makes the service unhealthy:
without it every read asks the database.

Workers are found by a ``ping`` broadcast on Redis. The embedded SQLite broker cannot broadcast,
so there the workers seen are those whose runs heartbeated recently.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import func, select, text

from ..broker_watch import read_epoch
from ..db import first_line
from ..models import Run, RunStatus, utcnow
from .common import Blueprint, celery, settings, state

blp = Blueprint("health", __name__, description="Health of the database, the broker and the workers.")

BROKER_TIMEOUT_S = 2.0
PING_TIMEOUT_S = 1.0
PING_REUSE_S = 5.0


class CheckSchema(Schema):
    ok = fields.Boolean(allow_none=True, metadata={"description": "null: unknown"})
    latency_ms = fields.Float()
    error = fields.String()


class BrokerCheckSchema(CheckSchema):
    url = fields.String(metadata={"description": "password hidden"})
    embedded = fields.Boolean()
    epoch = fields.Dict(allow_none=True, metadata={
        "description": "Redis: since when the broker holds its data (since), the worker that found it emptied "
                       "(worker) and the queued runs it sent again then (resent_runs); {\"state\": \"recovering\", ...} while "
                       "a worker is sending them; null: the broker lost its data and no worker has looked since "
                       "(they look every VMEMLAB_BROKER_CHECK_S)"})


class WorkersCheckSchema(CheckSchema):
    method = fields.String(metadata={"description": "ping (Redis) or run heartbeats (embedded broker)"})
    workers = fields.List(fields.String())
    queued_runs = fields.Integer()
    oldest_queued_s = fields.Float(allow_none=True)
    message = fields.String()
    ping_age_s = fields.Float(metadata={"description": "how old the ping replies are (one ping serves "
                                                      "every health check for 5 s)"})


class ChangeFeedSchema(Schema):
    state = fields.String(metadata={"description": "live: kept answers are served (service.api.response_cache); "
                                                   "connecting or stopped: every read asks the database; off: SQLite "
                                                   "or VMEMLAB_CHANGE_FEED=0"})
    changes = fields.Integer(metadata={"description": "changes this process has handled since it started"})
    confirmed_ms_ago = fields.Float(allow_none=True, metadata={
        "description": "when the feed last knew it had every change committed before (pings every 50 ms)"})
    kept_answers = fields.Integer()
    error = fields.String(allow_none=True)


class HealthSchema(Schema):
    status = fields.String(metadata={"description": "ok; degraded (no worker seen); unavailable (503)"})
    message = fields.String(metadata={"description": "with 503: what does not answer (the database, the broker)"})
    database = fields.Nested(CheckSchema)
    broker = fields.Nested(BrokerCheckSchema)
    workers = fields.Nested(WorkersCheckSchema)
    change_feed = fields.Nested(ChangeFeedSchema, metadata={
        "description": "this API process's view of PostgreSQL's change notifications (each process has its own)"})


@blp.route("")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="the database or the broker does not answer")
    @blp.doc(summary="Health of the database, the broker and the workers")
    def get(self):
        database = _timed(_database)
        broker = {**_timed(_broker), "url": celery().connection_for_write().as_uri(),
                  "embedded": settings().embedded_broker}
        if broker["ok"] and not settings().embedded_broker:
            try:
                broker["epoch"] = read_epoch(settings())
            except Exception:  # noqa: BLE001 - it answered a moment ago: the epoch is a detail
                pass
        workers = _workers(ping=broker["ok"]) if database["ok"] else {"ok": None, "message": "database unavailable"}
        healthy = database["ok"] and broker["ok"]
        status = "unavailable" if not healthy else "ok" if workers.get("ok") else "degraded"
        body = {"status": status, "database": database, "broker": broker, "workers": workers,
                "change_feed": _change_feed()}
        if not healthy:
            down = [name for name, check in (("the database", database), ("the broker", broker)) if not check["ok"]]
            body["message"] = f"{' and '.join(down)} {'does' if len(down) == 1 else 'do'} not answer; runs cannot be queued"
        return body, 200 if healthy else 503


def _change_feed() -> dict[str, Any]:
    feed = current_app.extensions.get("vmemlab.feed")
    if feed is None:
        return {"state": "off"}
    feed.start()
    return {**feed.status(), "kept_answers": len(current_app.extensions["vmemlab.answers"])}


def _timed(check) -> dict[str, Any]:
    start = time.monotonic()
    try:
        check()
    except Exception as exc:
        return {"ok": False, "latency_ms": _ms(start), "error": first_line(exc)}
    return {"ok": True, "latency_ms": _ms(start)}


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def _database() -> None:
    with state().sessions() as session:
        session.execute(text("SELECT 1"))


def _broker() -> None:
    with celery().connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=BROKER_TIMEOUT_S)


def _workers(ping: bool) -> dict[str, Any]:
    now = utcnow()
    with state().sessions() as session:
        queued = session.execute(select(func.count(), func.min(Run.created_at))
                                 .where(Run.status == RunStatus.QUEUED.value)).one()
        recent = now - dt.timedelta(seconds=settings().stale_after_s)
        heartbeating = sorted(session.scalars(select(Run.worker).distinct()
                                              .where(Run.heartbeat_at >= recent, Run.worker.is_not(None))))
    out: dict[str, Any] = {"queued_runs": queued[0],
                           "oldest_queued_s": round((now - queued[1]).total_seconds(), 1) if queued[1] else None}
    if settings().embedded_broker:
        out.update(method="run heartbeats", workers=heartbeating, ok=True if heartbeating else None)
        if not heartbeating:
            out["message"] = ("the embedded broker cannot ping workers and no run heartbeated in the last "
                              f"{settings().stale_after_s:g} s; runs wait in the queue until a worker starts")
        return out
    if not ping:
        out.update(method="ping", workers=[], ok=None, message="the broker is unavailable: workers not pinged")
        return out
    start = time.monotonic()
    try:
        replies, age = _ping()
    except Exception as exc:
        out.update(method="ping", workers=[], ok=False, error=first_line(exc))
        return out
    out.update(method="ping", workers=sorted(replies), ok=bool(replies), latency_ms=_ms(start), ping_age_s=age)
    if not replies:
        out["message"] = "no worker answered; runs wait in the queue until one starts"
    return out


_ping_lock = threading.Lock()
_last_ping: dict[int, tuple[float, dict[str, Any]]] = {}


def _ping() -> tuple[dict[str, Any], float]:
    """The workers' replies to a ping broadcast, and their age in seconds. A broadcast waits its
    whole timeout for replies, so replies are reused for PING_REUSE_S by every health check of
    this process (a monitor polling often does not hold a thread per request for a second).
    No reply is never reused: a worker that just started is seen at the next check."""
    app = celery()
    with _ping_lock:                        # one broadcast at a time; the others reuse it
        at, replies = _last_ping.get(id(app), (0.0, {}))
        now = time.monotonic()
        if not replies or now - at >= PING_REUSE_S:
            replies = app.control.inspect(timeout=PING_TIMEOUT_S).ping() or {}
            at = now = time.monotonic()
            _last_ping[id(app)] = (at, replies)
        return replies, round(now - at, 1)
