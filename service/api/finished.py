"""Finished results, serialized once per process and served as they are, with ETags.

A finished run (succeeded, failed or cancelled) never changes again: no path writes to it once it
has finished (cancelling answers 409, the recovery sweeps touch queued and running runs only). So
its JSON, its series, and an experiment or comparison whose runs have all finished, are the same
bytes on every read: each gunicorn worker keeps the bytes it made (an LRU bounded in bytes) and
sends them again.

Every request still asks the database one small question first, its *version*: the identity and
state of each run involved (id, creation time, status, finish time, attempts, progress,
heartbeat). The answer is the cache key and the ETag, so

- a run that is not finished is never served from here (no key: the view builds it as before);
- a deleted run or experiment is a 404 as before (no row), and an id SQLite gives again to a new
  row has another creation time, hence another key;
- the ETag of a finished result is the same in every worker and after a restart, and a client that
  sends it back (If-None-Match) gets a 304 without anything being loaded or serialized.

The check of the token (service.api.auth) runs before any view, so a cached body is never sent to a
request that may not read it.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

from flask import Response, current_app, request
from sqlalchemy import bindparam, select

from ..models import Experiment, Run
from ..models.runs import FINISHED
from .common import read_db

# per process; a finished run's detail is about 3 KB, an experiment's 4-8 KB, a series up to a few
# hundred KB for long runs
MAX_BYTES = 64 << 20
MAX_ITEM_BYTES = 4 << 20

_RUN_STATE = (Run.id, Run.created_at, Run.status, Run.finished_at, Run.attempts, Run.progress, Run.heartbeat_at)
# asked on every read: compiled once per dialect and sent as a string (exec_driver_sql), which
# costs the API 40 us of CPU against 100 us through the SQL expression layer; the values are the
# driver's (a datetime, or SQLite's text), used only to compare versions and make ETags
_RUN_VERSION = select(*_RUN_STATE).where(Run.id == bindparam("id"))
_EXPERIMENT_VERSION = (select(Experiment.created_at, Run.policy_name, *_RUN_STATE).select_from(Experiment)
                       .outerjoin(Run, Run.experiment_id == Experiment.id).where(Experiment.id == bindparam("id"))
                       .order_by(Run.id))


class BodyCache:
    """An LRU of response bodies (anything with a ``len()`` in bytes), bounded by their total size;
    safe across a worker's threads. service.api.response_cache keeps its answers in one, under its
    change feed's lock, and hears of each answer it drops to make room (``on_evict``)."""

    def __init__(self, max_bytes: int = MAX_BYTES, lock: Any = None,
                 on_evict: Optional[Callable[[Any, Any], None]] = None):
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = lock if lock is not None else threading.Lock()
        self._on_evict = on_evict

    def get(self, key: Any) -> Any:
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
            return body

    def put(self, key: Any, body: Any) -> bool:
        """Keep ``body`` unless it is larger than MAX_ITEM_BYTES; makes room by dropping the least
        recently used."""
        if len(body) > MAX_ITEM_BYTES:
            return False
        with self._lock:
            self._pop(key)
            self._items[key] = body
            self.size += len(body)
            while self.size > self.max_bytes and self._items:
                dropped_key, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)
                if self._on_evict is not None:
                    self._on_evict(dropped_key, dropped)
            return True

    def pop(self, key: Any) -> Any:
        with self._lock:
            return self._pop(key)

    def _pop(self, key: Any) -> Any:
        body = self._items.pop(key, None)
        if body is not None:
            self.size -= len(body)
        return body

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.size = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return key in self._items


def bodies() -> BodyCache:
    """The running application's cache (create_app makes one per application)."""
    return current_app.extensions["vmemlab.bodies"]


def _state(row: Any) -> tuple:
    """A run's state as plain values (the ETag is made of them, hashed as JSON)."""
    return tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in row)


_compiled: dict[tuple[str, int], Any] = {}


def _query(statement: Any, ident: int) -> Any:
    connection = read_db().connection()
    key = (connection.dialect.name, id(statement))
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = _compiled[key] = statement.compile(dialect=connection.dialect)
    params: Any = {"id": ident}
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup)
    return connection.exec_driver_sql(compiled.string, params)


def finished_run_version(run_id: int) -> Optional[tuple]:
    """The version of a finished run, or None if it is not finished (or does not exist)."""
    row = _query(_RUN_VERSION, run_id).first()
    if row is None or row[2] not in FINISHED:         # status
        return None
    return _state(row)


def finished_experiment_version(experiment_id: int) -> Optional[tuple[tuple, list[str]]]:
    """The version of an experiment whose runs have all finished, with its runs' policies in order;
    None while any of its runs is queued or running (or if there is no such experiment)."""
    rows = _query(_EXPERIMENT_VERSION, experiment_id).all()
    if not rows or any(row[2] is None or row[4] not in FINISHED for row in rows):     # run id, status
        return None
    return (*_state(rows[0][:1]), *(_state(row[2:]) for row in rows)), [row[1] for row in rows]


def json_body(data: Any) -> bytes:
    """The bytes flask-smorest's response would have: the application's JSON provider, as jsonify."""
    return current_app.json.response(data).get_data()


def json_response(body: bytes) -> Response:
    return current_app.response_class(body, mimetype=current_app.json.mimetype)


def cached(key: tuple, build: Callable[[], Any]) -> Response:
    """The response for ``key``: the stored bytes, or ``build()``'s data made JSON and stored."""
    cache = bodies()
    body = cache.get(key)
    if body is None:
        body = json_body(build())
        cache.put(key, body)
    return json_response(body)


def set_version_etag(blp: Any, what: str, version: Sequence[Any], *extra: Any) -> None:
    """The ETag of a finished result (flask-smorest hashes it), answering 304 at once when the
    client has it already."""
    blp.set_etag([what, request.script_root, list(version), *extra])
