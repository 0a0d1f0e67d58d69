"""The same schemathesis run as test_fuzz.py, on PostgreSQL: PostgreSQL refuses input that SQLite
stores (a NUL in a string gave a 500 there), so every operation is fuzzed against it too, from a
copy of a seeded PostgreSQL database per operation. No 5xx, every response as documented (the
checks of fuzzing.CHECKS). Skipped when no PostgreSQL server is reachable."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from service.settings import use_settings
from tests.service.conftest import throwaway_database

from .fuzzing import FUZZ_SETTINGS, Seeded, StatusRecord, app_copy, call, seed, spec_schema

schema = spec_schema()
RECORD = StatusRecord(schema)


@pytest.fixture(scope="module")
def seeded_postgres(tmp_path_factory: pytest.TempPathFactory, postgres_server: str) -> Iterator[Seeded]:
    with throwaway_database(postgres_server) as url:
        seeded = seed(tmp_path_factory.mktemp("fuzz-pg-seed"), database_url=url)
        use_settings(None)
        yield seeded


@pytest.fixture
def fuzz_app(seeded_postgres: Seeded, postgres_server: str, tmp_path: Path) -> Iterator[Flask]:
    """A fresh copy of the seeded application, on a database cloned from the seeded one, per operation."""
    seeded_name = make_url(seeded_postgres.settings.database_url).database
    with throwaway_database(postgres_server, template=seeded_name) as url, app_copy(seeded_postgres, tmp_path, url) as app:
        yield app


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_on_postgresql(case, fuzz_app: Flask, seeded_postgres: Seeded) -> None:
    call(case, fuzz_app, RECORD, seeded_postgres.token)
