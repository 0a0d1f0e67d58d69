"""Database access: engines and sessions from the settings, and the schema through Alembic.

The schema comes only from the migrations in ``migrations/``: ``upgrade()`` brings a database to
the latest revision (``vmemlab db upgrade`` calls it). Nothing in the application creates tables.

SQLite connections get foreign keys on, WAL journaling (readers do not block the writer: a worker
writes progress while the API reads it) and a busy timeout instead of "database is locked".

Other databases' connections are tested when taken from the pool (``pool_pre_ping``): one the
server dropped (a restart, ``pg_terminate_backend``, an idle timeout) is replaced instead of
failing the next request. A connection that drops in the middle of a transaction fails that
transaction only: the API answers 503 (service.api.errors) and the workers retry their short
transactions (with_db_retry).
"""
from __future__ import annotations

import importlib.util
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from sqlalchemy import Engine, Table, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from .settings import get_settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def normalize_url(url: str) -> str:
    """The URL as SQLAlchemy should read it: PostgreSQL through psycopg (3), the one driver the
    project ships. ``postgresql://`` (and Heroku's ``postgres://``) as users write them name no
    driver; ``postgresql+psycopg2://`` from an older configuration would fail to import once
    psycopg2 is gone, so it is read as psycopg too unless psycopg2 is still installed."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("postgresql", "postgres") or (
            driver == "postgresql+psycopg2" and importlib.util.find_spec("psycopg2") is None):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """A new engine for ``url``; for SQLite files, creates the parent folder and sets the pragmas."""
    parsed = make_url(normalize_url(url))
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def get_engine(url: Optional[str] = None) -> Engine:
    """The process's engine for ``url`` (default: the settings' DATABASE_URL), made once."""
    settings = get_settings()
    url = url or settings.database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url, echo=settings.sql_echo)
            _factories[url] = sessionmaker(bind=engine, expire_on_commit=False)
        return engine


def session_factory(url: Optional[str] = None) -> sessionmaker[Session]:
    url = url or get_settings().database_url
    get_engine(url)
    return _factories[url]


@contextmanager
def session_scope(url: Optional[str] = None) -> Iterator[Session]:
    """A session whose transaction commits when the block ends and rolls back if it raises."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def hold_row(session: Session, table: Table, row_id: int) -> None:
    """Hold a row until the session's transaction ends, as ``SELECT ... FOR UPDATE`` does: another
    holder waits, and what this transaction reads after it is current. SQLite has no row locks and
    ignores FOR UPDATE, and its Python driver begins a transaction only at the first write, so a
    read there holds nothing: a write that changes nothing takes SQLite's database write lock at
    once instead (coarser than a row, the same guarantee)."""
    if session.get_bind().dialect.name == "sqlite":
        # plain SQL: an ORM or Core update would also set the table's onupdate columns (updated_at)
        session.execute(text(f"UPDATE {table.name} SET id = id WHERE id = :id"), {"id": row_id})
    else:
        session.execute(select(table.c.id).where(table.c.id == row_id).with_for_update())


def dispose_engines(close: bool = True) -> None:
    """Drop every pooled connection. After a fork call it with ``close=False``: the child must not
    use, nor close, the connections it inherited from its parent."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        if close:
            _engines.clear()
            _factories.clear()


# --- migrations --------------------------------------------------------------------------------

def alembic_config(url: Optional[str] = None):
    """An Alembic Config for ``url`` (default: the settings' DATABASE_URL) and ``migrations/``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url or get_settings().database_url
    return config


def upgrade(url: Optional[str] = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the latest)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: Optional[str], revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"``: no tables left)."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: Optional[str] = None) -> Optional[str]:
    """The revision the database at ``url`` is at, or None if it has never been migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url or get_settings().database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def first_line(exc: BaseException) -> str:
    """``Class: first line`` of an error, the driver's own if SQLAlchemy wraps one: no SQL, no
    parameters, no traceback (what may be shown to a user or a log line)."""
    original = getattr(exc, "orig", None) or exc
    return f"{type(original).__name__}: {(str(original).strip().splitlines() or [''])[0][:200]}"


def is_connection_failure(exc: BaseException) -> bool:
    """A failure of the connection rather than of the statement: the database is unavailable
    (a 503 for the API), and a step of one transaction is worth trying again."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, (DisconnectionError, OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# --- retries of one transaction ------------------------------------------------------------------

# Waits between the tries of one database step whose connection failed: 6 tries in about 3 s.
DB_RETRY_DELAYS_S = (0.1, 0.2, 0.4, 0.8, 1.6)


def with_db_retry(what: str, step, *args: Any) -> Any:
    """``step(*args, retried=...)``, tried again after each transient database failure, up to
    ``len(DB_RETRY_DELAYS_S)`` times with backoff; ``retried`` tells the step whether an earlier
    try failed (whose commit may have gone through with only its answer lost). Only for steps
    that are one transaction each."""
    retried = False
    for delay in (*DB_RETRY_DELAYS_S, None):
        try:
            return step(*args, retried=retried)
        except (DBAPIError, DisconnectionError) as exc:
            if delay is None or not is_connection_failure(exc):
                raise
            log.warning("%s: the database connection failed (%s); trying again in %g s", what, first_line(exc), delay)
            retried = True
            time.sleep(delay)
    raise AssertionError("unreachable")
