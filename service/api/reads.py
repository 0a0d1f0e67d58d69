"""The database connection of the API's hot reads (a run, its series, an experiment, its
comparison, the runs list, the token check of a read): one round trip per statement.

Measured on the 2-core machine of bench/api.py, a round trip to PostgreSQL over loopback cost the
API process 0.3 to 1 ms of CPU under load (the kernel's TCP path runs in the sender), more than
everything else a cached answer does. The default sessions (service.db) spend three on top of the
statements: the pool's pre-ping (``SELECT 1`` at every checkout), ``BEGIN`` and ``ROLLBACK``. The
reads here run in autocommit on an engine of their own without the pre-ping: nothing to begin or
roll back (on PostgreSQL each statement of a READ COMMITTED transaction sees its own snapshot anyway,
so nothing is less consistent), and a connection the server dropped is found by the statement
that uses it instead of by a ping. Such a statement is retried once (``retrying_reads``): the
views using these sessions only read, and a disconnect invalidates the pool, so the retry runs on
a new connection. Writes keep db()'s sessions and their transactions.

The engine is disposed together with service.db's engine for the same URL (``engine_disposed``),
so ``db.dispose_engines()`` leaves no connection open, and without closing the parent's sockets
in a forked child.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, TypeVar

from flask import g
from sqlalchemy import create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from .. import db

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
log = logging.getLogger(__name__)


def read_sessions(url: str) -> sessionmaker[Session]:
    """Sessions for reads only, in autocommit; on PostgreSQL on an engine without pre-ping."""
    engine = db.get_engine(url)
    if engine.dialect.name == "sqlite":     # a file: nothing to ping, no round trip to save
        return sessionmaker(bind=engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
    reads = create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_pre_ping=False,
                          echo=engine.echo, pool_size=8, max_overflow=8)
    pid = os.getpid()

    def dispose_too(_engine: Any) -> None:
        reads.dispose(close=os.getpid() == pid)     # a forked child must not close its parent's sockets

    event.listen(engine, "engine_disposed", dispose_too)
    return sessionmaker(bind=reads, expire_on_commit=False)


def read_again_once(read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``read(*args, **kwargs)``, once more on a new connection if the read session's connection
    turned out to be dropped (a database restart, ``pg_terminate_backend``, an idle timeout)."""
    try:
        return read(*args, **kwargs)
    except DBAPIError as exc:
        if not (exc.connection_invalidated or db.is_connection_failure(exc)):
            raise
        log.info("a read found its database connection dropped; reading again on a new one: %s", db.first_line(exc))
        session = g.pop("read_session", None)
        if session is not None:
            session.close()
        return read(*args, **kwargs)


def retrying_reads(view: F) -> F:
    """A read-only view run with ``read_again_once``."""
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return read_again_once(view, *args, **kwargs)
    return wrapper  # type: ignore[return-value]
