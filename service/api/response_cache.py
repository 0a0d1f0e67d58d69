"""Whole answers to the hot reads, kept per process and sent again without Flask or the database,
for as long as PostgreSQL's change feed (service.change_feed) says nothing they were made of
has changed.

A view marks its answer as one to keep with ``keep_answer(what)``: a finished run or its series
(``("run", id)``), a finished experiment or its comparison (``("experiment", id)``), a page of
the runs list (``RUNS``: any change to any run). The middleware (``CachedReads``) keeps the
status, headers and body of such a 200 by its path and query string, and answers the next GET of
the same URL with them, or with a 304 when the client sends the ETag back. A change to a run
drops the answers of that run, of its experiment and every runs list; a change to an experiment
drops its answers; a new connection of the feed drops everything.

What it saves: the per-request query of service.api.finished (the version of what is read) and
all of Flask's dispatch. Measured with bench/api.py on a 2-core machine, the read mix cost the
API 1.9-2.7 ms of CPU per request before and 0.25-0.35 ms with kept answers: about what a bare
Flask hello-world costs under the same server (0.3-0.4 ms).

It answers only when

- the feed is live: otherwise every request goes to Flask as before (SQLite, VMEMLAB_CHANGE_FEED=0,
  the feed's connection down, a commit of this process not yet followed by a ping of the feed);
- reads are open (``VMEMLAB_OPEN_READS``, the default): a closed read needs its token checked;
- the answer was stored under the feed's lock with the feed's ``seq`` unchanged since before the
  request read the database, so that no change handled meanwhile is missing from it.

Kept answers are counted in the request metrics (service.prometheus) like any other, though not
in the gauge of requests in progress: they take microseconds.

A change committed by another process is seen here once this process's feed has handled it:
PostgreSQL delivers it at the commit, and the feed's thread takes it as soon as it gets Python's
lock (well under a millisecond on an idle process, up to a few under load). A feed that falls
behind by more than ``service.change_feed.STALE_S`` stops the cache until it has caught up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from flask import request
from werkzeug.http import parse_etags, unquote_etag

from ..change_feed import ChangeFeed
from .finished import MAX_BYTES, BodyCache

RUNS = ("runs",)          # what a page of the runs list depends on: every run
_KEEP = "vmemlab.keep_answer"


def keep_answer(what: tuple) -> None:
    """Mark this request's answer as one to keep while ``what`` does not change."""
    rule = request.url_rule
    request.environ[_KEEP] = (what, rule.rule if rule is not None else "unmatched")


@dataclass(frozen=True)
class Answer:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    etag: Optional[str]           # unquoted
    route: str                    # the route pattern, for the request metrics
    what: tuple

    def __len__(self) -> int:     # its size in the cache
        return len(self.body)


class ResponseCache:
    """Answers by URL, bounded by the size of their bodies, dropped by the feed's changes."""

    def __init__(self, feed: ChangeFeed, max_bytes: int = MAX_BYTES):
        self.feed = feed
        self._answers = BodyCache(max_bytes, lock=feed.lock, on_evict=self._unindex)
        self._by_what: dict[tuple, set[tuple]] = {}
        feed.subscribe(self)

    def get(self, key: tuple) -> Optional[Answer]:
        return self._answers.get(key) if self.feed.live() else None

    def put(self, key: tuple, answer: Answer, token: int) -> bool:
        """Keep ``answer`` if no change has been handled since ``token`` was taken."""
        with self.feed.lock:
            if self.feed.seq != token or not self.feed.live():
                return False
            self._drop(key)
            if not self._answers.put(key, answer):
                return False
            self._by_what.setdefault(answer.what, set()).add(key)
            return True

    def clear(self) -> None:
        with self.feed.lock:
            self._answers.clear()
            self._by_what.clear()

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: tuple) -> bool:
        return key in self._answers

    def changed(self, experiment_id: Optional[int], run_id: Optional[int]) -> None:
        """Drop what a change makes stale (the feed calls this holding its lock)."""
        whats = [("experiment", experiment_id)]
        if run_id is not None:
            whats += [("run", run_id), RUNS]
        for what in whats:
            for key in self._by_what.pop(what, ()):
                self._answers.pop(key)

    def _drop(self, key: tuple) -> None:
        answer = self._answers.pop(key)
        if answer is not None:
            self._unindex(key, answer)

    def _unindex(self, key: tuple, answer: Answer) -> None:
        keys = self._by_what.get(answer.what)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_what[answer.what]


class CachedReads:
    """WSGI middleware in front of the Flask app: answers kept GETs, keeps the answers views mark."""

    def __init__(self, app: Callable, cache: ResponseCache, open_reads: bool,
                 observe: Optional[Callable[[str, str, str, float], None]] = None):
        self.app = app
        self.cache = cache
        self.open_reads = open_reads
        self.observe = observe        # (method, route, status, seconds): service.prometheus

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method != "GET" or not self.open_reads:
            return self.app(environ, start_response)
        key = (environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
        answer = self.cache.get(key)
        if answer is not None:
            return self._send(answer, environ, start_response)
        token = self.cache.feed.token()
        if token is None:
            return self.app(environ, start_response)
        seen: dict[str, Any] = {}

        def keep_status(status: str, headers: list, exc_info: Any = None) -> Callable:
            seen["status"], seen["headers"] = status, headers
            return start_response(status, headers, exc_info)

        body = self.app(environ, keep_status)
        kept = environ.get(_KEEP)
        if kept is None or not seen.get("status", "").startswith("200"):
            return body
        try:
            data = b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        headers = [(k, v) for k, v in seen["headers"] if k.lower() != "date"]
        if not any(k.lower() == "set-cookie" for k, _ in headers):      # a session's answer is its own
            etag = next((v for k, v in headers if k.lower() == "etag"), None)
            self.cache.put(key, Answer(seen["status"], headers, data, unquote_etag(etag)[0] if etag else None,
                                       kept[1], kept[0]), token)
        return [data]

    def _send(self, answer: Answer, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        condition = environ.get("HTTP_IF_NONE_MATCH")
        if condition and answer.etag is not None and parse_etags(condition).contains(answer.etag):
            # as Flask's 304 (service.api.common.Blueprint): the ETag and nothing of the body
            status, body = "304 NOT MODIFIED", b""
            headers = [(k, v) for k, v in answer.headers if k.lower() == "etag"]
        else:
            status, headers, body = answer.status, answer.headers, answer.body
        start_response(status, list(headers))
        if self.observe is not None:
            self.observe("GET", answer.route, status[:3], time.perf_counter() - started)
        return [body]
