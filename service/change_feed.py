"""PostgreSQL's change notifications, followed by one thread per process and database: which runs
and experiments changed, so that answers made from them can be served again without asking the
database (service.api.response_cache), and dropped as soon as what they were made of changes.

Migration 0009's triggers announce every change to a run or an experiment on ``vmemlab_changes``
when its transaction commits, whichever process or machine made it. PostgreSQL delivers
notifications to each listening session in commit order, so the thread also pings itself through
the same queue every ``ping_s``: once its own ping comes back, every change committed before the
ping was sent has been handled. Until then, and whenever the last ping that came back is older
than ``stale_s`` (the connection dropped, the database restarted, the thread could not run), the
feed is not *live* and its users ask the database as they would without it. A new connection
tells the subscribers to forget everything: changes may have been missed while it was down.

A subscriber's answers are valid from a ``token()`` taken before the database was read: ``seq``
counts the changes handled, so an answer stored under the lock while ``seq`` still equals its
token was read before any change that has been handled since, and a later change reaches the
subscriber's ``changed``. Each commit of this process's engine calls ``distrust()``, which keeps
the feed not live until a ping sent after it comes back: this process reads its own writes.

The feed is off on SQLite (there is no round trip to save there), with ``VMEMLAB_CHANGE_FEED=0``
(a pooler in transaction mode, such as PgBouncer's, does not keep a LISTEN), and in a process
that never asks (the thread starts at the first ``token()``).
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from typing import Any, Callable, Optional

from .db import first_line

log = logging.getLogger(__name__)

CHANNEL = "vmemlab_changes"
PING_S = 0.05
STALE_S = 2.0
RECONNECT_S = 2.0

class ChangeFeed:
    def __init__(self, connect: Callable[[], Any], *, ping_s: float = PING_S, stale_s: float = STALE_S,
                 reconnect_s: float = RECONNECT_S):
        self._connect = connect
        self.ping_s, self.stale_s, self.reconnect_s = ping_s, stale_s, reconnect_s
        self.lock = threading.RLock()
        self.seq = 0                     # changes handled, and reconnections
        self._confirmed = -math.inf      # when the last ping that came back was sent (monotonic)
        self._distrust_before = -math.inf
        self._subscribers: list[weakref.ref] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pid: Optional[int] = None
        self.backend_pid: Optional[int] = None       # the listening session's, in pg_stat_activity
        self.last_error: Optional[str] = None

    # --- what users call ----------------------------------------------------------------------------

    def subscribe(self, subscriber: Any) -> None:
        """``subscriber.changed(experiment_id, run_id)`` for each change and ``subscriber.clear()``
        at each new connection, on the feed's thread, holding ``lock``. The feed keeps a weak
        reference: a subscriber nobody else keeps (an application gone) stops being called."""
        with self.lock:
            self._subscribers = [ref for ref in self._subscribers if ref() is not None] + [weakref.ref(subscriber)]

    def _each_subscriber(self) -> list[Any]:
        return [s for s in (ref() for ref in self._subscribers) if s is not None]

    def live(self) -> bool:
        """Whether every change committed before the last ping came back has been handled, that
        ping is recent, and no commit of this process came after it."""
        confirmed = self._confirmed
        return confirmed > self._distrust_before and time.monotonic() - confirmed <= self.stale_s

    def token(self) -> Optional[int]:
        """``seq`` if the feed is live (starting it if need be), else None."""
        self.start()
        return self.seq if self.live() else None

    def distrust(self) -> None:
        """Not live until a ping sent after now comes back (call after this process wrote)."""
        self._distrust_before = time.monotonic()

    def wait_live(self, timeout: float = 5.0) -> bool:
        """Start if need be and wait until every change committed before this call is handled."""
        self.start()
        self.distrust()
        deadline = time.monotonic() + timeout
        while not self.live():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def status(self) -> dict[str, Any]:
        running = self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()
        age = time.monotonic() - self._confirmed
        state = "live" if self.live() else ("connecting" if running else "stopped")
        return {"state": state, "changes": self.seq, "confirmed_ms_ago": None if math.isinf(age) else round(age * 1000, 1),
                "error": self.last_error}

    def start(self) -> None:
        if self._pid == os.getpid() and self._thread is not None:
            return
        with self.lock:
            if self._pid == os.getpid() and self._thread is not None:
                return
            # a forked child inherits the parent's state but not its thread: start afresh
            self._pid, self._confirmed = os.getpid(), -math.inf
            self._stop.clear()
            self._thread = threading.Thread(target=self._follow, name="vmemlab-change-feed", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        self._confirmed = -math.inf

    # --- the thread ---------------------------------------------------------------------------------

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                # pings go out on a connection of their own: the listening one only ever waits, so
                # nothing it receives waits in psycopg's backlog while a ping is sent
                with self._connect() as listening, self._connect() as pinging:
                    self._listen(listening, pinging)
            except Exception as exc:  # noqa: BLE001 - a dropped connection, a restart: connect again
                self.last_error = first_line(exc)
                if not self._stop.is_set():
                    log.warning("change feed: %s; reads ask the database until it is back (retry in %g s)",
                                self.last_error, self.reconnect_s)
            finally:
                self._confirmed = -math.inf
            self._stop.wait(self.reconnect_s)

    def _listen(self, listening: Any, pinging: Any) -> None:
        self.backend_pid = listening.info.backend_pid
        ping_channel = f"vmemlab_ping_{self.backend_pid}"
        listening.execute(f"LISTEN {CHANNEL}")
        listening.execute(f"LISTEN {ping_channel}")
        self._forget_everything()       # changes may have been missed while there was no connection
        self.last_error = None
        log.info("change feed: listening on %s", CHANNEL)
        sent: dict[int, float] = {}     # pings not back yet: number -> when sent
        count = 0
        while not self._stop.is_set():
            count += 1
            sent[count] = time.monotonic()
            pinging.execute("SELECT pg_notify(%s, %s)", (ping_channel, str(count)))
            for note in listening.notifies(timeout=self.ping_s):
                if note.channel == CHANNEL:
                    self._changed(note.payload)
                elif note.channel == ping_channel and int(note.payload) in sent:
                    back = int(note.payload)        # pings come back in order: the older ones too
                    self._confirmed = sent[back]
                    sent = {n: at for n, at in sent.items() if n > back}

    def _changed(self, payload: str) -> None:
        kind, *ids = payload.split()
        try:
            experiment_id, run_id = int(ids[0]), int(ids[1]) if kind == "run" else None
        except (IndexError, ValueError):        # not migration 0009's: assume anything changed
            log.warning("change feed: a notification not understood on %s: %r", CHANNEL, payload[:100])
            self._forget_everything()
            return
        with self.lock:
            self.seq += 1
            for subscriber in self._each_subscriber():
                subscriber.changed(experiment_id, run_id)

    def _forget_everything(self) -> None:
        with self.lock:
            self.seq += 1
            for subscriber in self._each_subscriber():
                subscriber.clear()


# --- one feed per process and database -----------------------------------------------------------------

_feeds: dict[str, ChangeFeed] = {}
_feeds_lock = threading.Lock()


def feed_for(engine: Any) -> Optional[ChangeFeed]:
    """The feed of ``engine``'s PostgreSQL database (not started), or None on other databases. It
    stops when the engine is disposed (service.db.dispose_engines)."""
    if engine.dialect.name != "postgresql":
        return None
    from sqlalchemy import event

    key = engine.url.render_as_string(hide_password=False)
    with _feeds_lock:
        feed = _feeds.get(key)
        if feed is None:
            feed = _feeds[key] = ChangeFeed(_connector(engine))

            def stop_with_engine(_engine: Any) -> None:
                with _feeds_lock:
                    if _feeds.get(key) is feed:
                        del _feeds[key]
                feed.stop()

            event.listen(engine, "engine_disposed", stop_with_engine)
            # a write of this process (a view, a script, a test) is read back by this process
            event.listen(engine, "commit", lambda _conn: feed.distrust())
        return feed


def _connector(engine: Any) -> Callable[[], Any]:
    """A new psycopg connection with the engine's own connection arguments, in autocommit."""
    import psycopg

    args, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs = {**kwargs, "autocommit": True}
    # a connection that died without a word (a partition, a host gone) fails in seconds instead of
    # TCP's minutes: until then the feed is not live anyway (its pings stop coming back)
    for name, value in (("connect_timeout", 5), ("keepalives", 1), ("keepalives_idle", 5),
                        ("keepalives_interval", 2), ("keepalives_count", 3), ("tcp_user_timeout", 10_000)):
        kwargs.setdefault(name, value)
    return lambda: psycopg.connect(*args, **kwargs)
