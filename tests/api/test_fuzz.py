"""Schemathesis over every operation of /api/v1/openapi.json: no 5xx, every response matches the
documented schema, status code and content type. A bounded number of examples per operation here
(VMEMLAB_FUZZ_EXAMPLES, default 25); ``bench/fuzz.py`` runs many more.
Every generated request sends an admin token.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import ContextManager, Iterator

import pytest
from flask import Flask

from service.settings import use_settings

from .fuzzing import FUZZ_SETTINGS, Seeded, StatusRecord, app_copy, call, scripted, seed, spec_schema
from .stateful import Reach, run_stateful

schema = spec_schema()
RECORD = StatusRecord(schema)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    seeded = seed(tmp_path_factory.mktemp("fuzz-seed"))
    use_settings(None)
    yield seeded


@pytest.fixture
def fuzz_app(seeded: Seeded, tmp_path: Path) -> Iterator[Flask]:
    """A fresh copy of the seeded application for each operation."""
    with app_copy(seeded, tmp_path) as app:
        yield app


@schema.parametrize()
@FUZZ_SETTINGS
def test_api(case, fuzz_app: Flask, seeded: Seeded) -> None:
    call(case, fuzz_app, RECORD, seeded.token)



def test_zz_every_documented_status_is_returned(fuzz_app: Flask, seeded: Seeded, request: pytest.FixtureRequest) -> None:
    """After the generated requests (above), a scripted few for what random input does not reach:
    every (operation, status) the document lists must have been answered at least once."""
    assert RECORD.documented, "the OpenAPI document lists no status to check"
    generated = any(item.originalname == "test_api" for item in request.session.items
                    if isinstance(item, pytest.Function))
    if not generated:
        pytest.skip("the generated requests were not selected (run the whole file)")
    assert RECORD.seen, "the generated requests were selected but none was answered"
    scripted(schema, fuzz_app, RECORD, seeded.token)
    if os.environ.get("VMEMLAB_FUZZ_SUMMARY"):          # bench/fuzz.py prints it
        Path(os.environ["VMEMLAB_FUZZ_SUMMARY"]).write_text(json.dumps(RECORD.summary(), indent=1))
    assert RECORD.never_returned() == []


def test_stateful(seeded: Seeded, tmp_path: Path) -> None:
    """Sequences that follow the document's links: no 5xx, every answer as documented, and every
    operation with a path parameter reached with an id that exists."""
    copies = itertools.count()

    def fresh_app() -> ContextManager[Flask]:
        folder = tmp_path / str(next(copies))
        folder.mkdir()
        return app_copy(seeded, folder)

    reach = Reach(schema)
    failures = run_stateful(schema, fresh_app, seeded.token, reach)
    reach.write("sqlite")
    assert failures == [], f"{len(failures)} failures, the first ones:\n\n" + "\n\n".join(failures[:5])
    assert reach.unreached() == [], reach.summary()
