"""Fixtures for the persistence and execution layer: a migrated database per test, on SQLite
(a file in the test's folder) and on PostgreSQL (one throwaway database per test session)."""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import pytest

# Before anything imports service.celery_app (which builds the one app from the environment):
# never touch a real data folder, and run without the full stack unless a test asks for it.
_SESSION_DATA = tempfile.mkdtemp(prefix="vmemlab-tests-")
atexit.register(shutil.rmtree, _SESSION_DATA, True)
os.environ["VMEMLAB_DATA_DIR"] = _SESSION_DATA
for _name in ("DATABASE_URL", "REDIS_URL", "VMEMLAB_TRACE_DIR", "VMEMLAB_QUEUE"):
    os.environ.pop(_name, None)

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from service import db  # noqa: E402
from service.models import Base  # noqa: E402
from service.settings import Settings, use_settings  # noqa: E402

# CI starts PostgreSQL with trust authentication; any database on the server will do to connect.
POSTGRES_URL = os.environ.get("VMEMLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("VMEMLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL server, or the test is skipped."""
    engine = create_engine(db.normalize_url(POSTGRES_URL), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL} (set VMEMLAB_TEST_POSTGRES_URL): "
                    f"{str(exc.orig).strip()}")
    finally:
        engine.dispose()
    return POSTGRES_URL


@contextmanager
def throwaway_database(server: str, template: Optional[str] = None) -> Iterator[str]:
    """A database on ``server`` (empty, or a copy of the database ``template``), dropped afterwards."""
    name = f"vmemlab_test_{secrets.token_hex(4)}"
    if template:
        db.dispose_engines()        # a template must have no open connection
    admin = create_engine(db.normalize_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        db.dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A database for this test session, dropped at the end."""
    with throwaway_database(postgres_server) as url:
        yield url


@pytest.fixture
def fresh_postgres_database(postgres_server: str) -> Iterator[str]:
    """An empty database for one test, dropped after it."""
    with throwaway_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_migrated(postgres_database: str) -> str:
    db.upgrade(postgres_database)
    return postgres_database


def truncate_all(url: str) -> None:
    """Empty every table of the PostgreSQL database at ``url`` (ids start at 1 again)."""
    engine = db.make_engine(url)
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


def require_redis(url: str) -> None:
    """Skip the test unless a Redis server answers at ``url``."""
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url} (set VMEMLAB_TEST_REDIS_URL): {exc}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at the latest revision with no rows, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vmemlab.db'}"
        db.upgrade(url)
        yield url
        return
    url = request.getfixturevalue("postgres_migrated")
    truncate_all(url)
    yield url


@contextmanager
def installed(settings: Settings) -> Iterator[Settings]:
    """``settings`` as the process's settings (its folders made) until the block ends."""
    settings.ensure_dirs()
    use_settings(settings)
    try:
        yield settings
    finally:
        use_settings(None)
        db.dispose_engines()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test, installed as the process's settings; short heartbeats."""
    with installed(Settings(data_dir=tmp_path / "data", database_url=db_url, heartbeat_s=0.05,
                            stale_heartbeats=40)) as settings:
        yield settings
