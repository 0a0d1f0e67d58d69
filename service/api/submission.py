"""The POST of anything that queues runs (an experiment, a sweep, a capacity search): read the
JSON body, create it (validation names every field: 422; an Idempotency-Key used for another body:
409; the same key and body: the earlier one), commit, then queue its runs. If the broker cannot
take them, what was created is withdrawn (deleted again) and the answer is 503 with
``Retry-After``: nothing is left that no worker will ever run, and retrying is safe."""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, TypeVar

from flask import request
from flask_smorest import abort
from sqlalchemy.orm import Session

from ..idempotency import IdempotencyConflict
from ..scenario import ScenarioValidationError
from .common import celery, db, invalid
from .storable import request_json

T = TypeVar("T")
log = logging.getLogger(__name__)
RETRY_AFTER_S = 10


def create_and_queue(what: str, create: Callable[[Session, Any], T], run_ids: Callable[[T], Iterable[int]],
                     withdraw: Callable[[Session, T], None], enqueue: Callable[..., Any]) -> T:
    """The created row (``created`` True) or the replayed one (``created`` False)."""
    if not request.is_json:
        abort(415, message=f"send the {what} as JSON (Content-Type: application/json)")
    try:
        body = request_json()
    except ValueError as exc:       # also UnicodeDecodeError
        abort(400, message=f"the body is not valid JSON: {exc}")
    session = db()
    try:
        row: Any = create(session, body)
    except ScenarioValidationError as exc:
        session.rollback()
        invalid("json", exc.errors, message=f"invalid {what}: {'; '.join(exc.lines()[:5])}")
    except IdempotencyConflict as exc:
        session.rollback()
        abort(409, message=str(exc))
    if not row.created:
        return row
    session.commit()
    try:
        enqueue(list(run_ids(row)), app=celery())
    except Exception:
        log.exception("queueing the runs of %s %s failed; withdrawing it", what, row.id)
        try:
            withdraw(session, row)
            session.commit()
        except Exception:
            session.rollback()
            log.exception("withdrawing %s %s failed: its runs stay queued until re-sent", what, row.id)
        abort(503, message=f"the task broker is unreachable, so the {what} was not stored; retry later",
              headers={"Retry-After": str(RETRY_AFTER_S)})
    return row
