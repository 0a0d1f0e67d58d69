"""The schema comes only from the Alembic migrations, on SQLite and PostgreSQL alike: up, down
to nothing, and up again; and the migrated schema is exactly what the models declare."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service import db
from service.models import Base

TABLES = {"hosts", "vm_templates", "traces", "plugins", "experiments", "experiment_traces", "experiment_templates",
          "runs", "run_series", "api_tokens", "sweeps", "sweep_points",
          "capacity_searches", "capacity_probes"}


def _tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _differences(url: str) -> list:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("fresh_postgres_database")


def test_up_down_up(empty_url):
    assert db.current_revision(empty_url) is None
    db.upgrade(empty_url)
    assert db.current_revision(empty_url) == db.head_revision()
    assert _tables(empty_url) == TABLES
    assert _differences(empty_url) == []

    db.downgrade(empty_url, "base")
    assert db.current_revision(empty_url) is None
    assert _tables(empty_url) == set()

    db.upgrade(empty_url)
    assert _tables(empty_url) == TABLES


def test_run_indices_cover_the_filter_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'ix.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    indexed = {tuple(ix["column_names"]) for ix in sa.inspect(engine).get_indexes("runs")}
    engine.dispose()
    for column in ("status", "experiment_id", "fingerprint", "seed", "created_at", "slowdown", "peak_used_mb",
                   "host_swap_peak_mb", "overcommit_ratio", "host_id"):
        assert (column,) in indexed
    assert ("policy_name", "policy_version") in indexed
    assert ("status", "heartbeat_at") in indexed


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'pragmas.db'}"
    engine = db.make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_the_application_never_creates_tables():
    """No create_all outside the tests: the schema has one source."""
    from pathlib import Path

    root = Path(db.__file__).resolve().parent
    offenders = [str(p) for p in root.rglob("*.py") if "create_all(" in p.read_text()]
    assert offenders == []
