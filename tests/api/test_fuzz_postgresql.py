"""The same schemathesis runs as test_fuzz.py, on PostgreSQL: PostgreSQL refuses input that SQLite
stores (a NUL in a string gave a 500 there), so every operation is fuzzed against it too, from a
copy of a seeded PostgreSQL database per operation, and the stateful phase (tests/api/stateful.py)
runs on a copy per scenario. No 5xx, every response as documented (the checks of fuzzing.CHECKS),
every operation with a path parameter reached with a real id. Skipped when no PostgreSQL server is
reachable."""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from pathlib import Path
from typing import ContextManager, Iterator

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from service.settings import use_settings
from tests.service.conftest import throwaway_database

from .fuzzing import FUZZ_SETTINGS, Seeded, StatusRecord, app_copy, call, seed, spec_schema
from .stateful import Reach, run_stateful

schema = spec_schema()
RECORD = StatusRecord(schema)


@pytest.fixture(scope="module")
def seeded_postgres(tmp_path_factory: pytest.TempPathFactory, postgres_server: str) -> Iterator[Seeded]:
    with throwaway_database(postgres_server) as url:
        seeded = seed(tmp_path_factory.mktemp("fuzz-pg-seed"), database_url=url)
        use_settings(None)
        yield seeded


@contextmanager
def postgres_copy(seeded: Seeded, server: str, folder: Path) -> Iterator[Flask]:
    """The seeded application on a database cloned from the seeded one."""
    seeded_name = make_url(seeded.settings.database_url).database
    with throwaway_database(server, template=seeded_name) as url, app_copy(seeded, folder, url) as app:
        yield app


@pytest.fixture
def fuzz_app(seeded_postgres: Seeded, postgres_server: str, tmp_path: Path) -> Iterator[Flask]:
    """A fresh copy of the seeded application per operation."""
    with postgres_copy(seeded_postgres, postgres_server, tmp_path) as app:
        yield app


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_on_postgresql(case, fuzz_app: Flask, seeded_postgres: Seeded) -> None:
    call(case, fuzz_app, RECORD, seeded_postgres.token)


def test_stateful_on_postgresql(seeded_postgres: Seeded, postgres_server: str, tmp_path: Path) -> None:
    """Sequences that follow the document's links, each on its own copy of the seeded database."""
    copies = itertools.count()

    def fresh_app() -> ContextManager[Flask]:
        folder = tmp_path / str(next(copies))
        folder.mkdir()
        return postgres_copy(seeded_postgres, postgres_server, folder)

    reach = Reach(schema)
    failures = run_stateful(schema, fresh_app, seeded_postgres.token, reach)
    reach.write("postgresql")
    assert failures == [], f"{len(failures)} failures, the first ones:\n\n" + "\n\n".join(failures[:5])
    assert reach.unreached() == [], reach.summary()
