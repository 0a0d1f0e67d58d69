"""PostgreSQL through psycopg 3: URLs as users write them, and the failures the code tells apart
(a dropped connection is retried, a value the database refuses is not)."""
from __future__ import annotations

import importlib.util

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from service import db


@pytest.mark.parametrize("written, read", [
    ("postgresql://u:p@db:5432/vmemlab", "postgresql+psycopg://u:p@db:5432/vmemlab"),
    ("postgres://u:p@db/vmemlab", "postgresql+psycopg://u:p@db/vmemlab"),
    ("postgresql+psycopg://u@db/x", "postgresql+psycopg://u@db/x"),
    ("postgresql://u:p%40ss@db/x?sslmode=require", "postgresql+psycopg://u:p%40ss@db/x?sslmode=require"),
    ("sqlite:///var/vmemlab.db", "sqlite:///var/vmemlab.db"),
])
def test_urls_as_users_write_them_use_psycopg(written: str, read: str):
    assert db.normalize_url(written) == read


def test_an_old_psycopg2_url_still_works_once_psycopg2_is_gone():
    expected = "postgresql+psycopg2" if importlib.util.find_spec("psycopg2") else "postgresql+psycopg"
    assert db.normalize_url("postgresql+psycopg2://u@db/x") == f"{expected}://u@db/x"


def test_the_engine_connects_with_psycopg_3(postgres_server: str):
    engine = db.make_engine(postgres_server)
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            assert type(conn.connection.dbapi_connection).__module__.startswith("psycopg")
    finally:
        engine.dispose()


def test_a_nul_character_is_a_statement_error_not_a_connection_failure(postgres_server: str):
    """psycopg2 raised a bare ValueError for NUL; psycopg 3 raises DataError, a DBAPIError: the
    retry loop must not take it for a dropped connection and try it again."""
    engine = db.make_engine(postgres_server)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as raised:
            conn.execute(text("SELECT CAST(:v AS text)"), {"v": "a\x00b"})
        assert not db.is_connection_failure(raised.value)
        calls = []

        def step(*, retried: bool):
            calls.append(retried)
            with engine.connect() as conn:
                conn.execute(text("SELECT CAST(:v AS text)"), {"v": "a\x00b"})

        with pytest.raises(DBAPIError):
            db.with_db_retry("nul", step)
        assert calls == [False]
    finally:
        engine.dispose()


def test_a_terminated_connection_is_a_connection_failure(postgres_server: str):
    engine = db.make_engine(postgres_server)
    admin = create_engine(db.normalize_url(postgres_server), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            pid = conn.connection.dbapi_connection.info.backend_pid
            with admin.connect() as a:
                a.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
            with pytest.raises(DBAPIError) as raised:
                conn.execute(text("SELECT 1"))
        assert db.is_connection_failure(raised.value)
        with engine.connect() as conn:      # the pool's pre-ping replaced it
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
        admin.dispose()
