"""Fixtures for the API tests: an application on a migrated database (SQLite and PostgreSQL,
from tests/service/conftest.py), its test client, and row counts to prove nothing was half-stored."""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

# The service fixtures: importing them here makes them fixtures of these tests too (and sets up the
# throwaway data folder before anything builds the Celery app).
from tests.service.conftest import (  # noqa: F401
    REDIS_URL, db_url, fresh_postgres_database, postgres_database, postgres_migrated, postgres_server, settings,
)

from service import db
from service.app import create_app
from service.models import Base
from service.settings import Settings

from .helpers import Api, with_token


@pytest.fixture
def app(settings: Settings) -> Flask:  # noqa: F811
    """The application; its test clients send an admin token (``anonymous`` sends none)."""
    return with_token(create_app(settings))


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    """A test client that sends no token."""
    return FlaskClient(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client)


@pytest.fixture
def make_app(settings: Settings) -> Callable[..., Flask]:  # noqa: F811
    """An application with some settings changed, e.g. ``make_app(max_trace_bytes=1000)``."""
    return lambda **changes: with_token(create_app(dataclasses.replace(settings, **changes)))


@pytest.fixture
def counts(settings: Settings) -> Callable[[], dict[str, int]]:  # noqa: F811
    """Rows in every table, to compare before and after a refused request."""
    def count() -> dict[str, int]:
        with db.session_scope(settings.database_url) as session:
            return {table.name: session.scalar(select(func.count()).select_from(table))
                    for table in Base.metadata.sorted_tables}
    return count


@pytest.fixture(scope="session", autouse=True)
def _warm_engine() -> Iterator[None]:
    """Compile (or load from the on-disk cache) the engine once, so runs and workers start warm."""
    from service.engine import simulate
    from service.policies import load_policy
    from service.scenario import load_scenario

    from tests.service.helpers import tiny

    simulate(load_scenario(tiny())[0], load_policy("static").create({}))
    yield


def pytest_configure(config: pytest.Config) -> None:
    # kombu's SQLAlchemy transport (the embedded broker) uses a loader strategy SQLAlchemy 2.1 deprecates
    config.addinivalue_line("filterwarnings", "ignore:The ``noload`` loader strategy:DeprecationWarning")
