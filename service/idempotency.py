"""Idempotency keys of created resources (experiments, sweeps, capacity searches): the same key
with the same request gives back what it created; with another request, a conflict. The row's
``idempotency_key`` is unique, so of two concurrent requests with one key only one is stored."""
from __future__ import annotations

from typing import Any, Optional, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

T = TypeVar("T")


class IdempotencyConflict(ValueError):
    """The idempotency key was already used for a different request."""

    def __init__(self, key: str, existing_id: int, kind: str = "experiment"):
        super().__init__(f"idempotency key {key!r} was already used for a different request ({kind} {existing_id})")
        self.key = key
        self.existing_id = existing_id


def replay(session: Session, model: type[T], key: Optional[str], request_sha256: str, kind: str) -> Optional[T]:
    """The row stored under ``key``, marked ``created = False``; None if there is none."""
    if key is None:
        return None
    existing: Any = session.scalar(select(model).where(model.idempotency_key == key))  # type: ignore[attr-defined]
    if existing is None:
        return None
    if existing.request_sha256 != request_sha256:
        raise IdempotencyConflict(key, existing.id, kind)
    existing.created = False
    return existing


def add_or_replay(session: Session, row: T, kind: str) -> T:
    """Add and flush ``row``; if a concurrent request stored the same key first, roll back and
    return that one instead."""
    session.add(row)
    key, request_sha256 = row.idempotency_key, row.request_sha256  # type: ignore[attr-defined]
    try:
        session.flush()
    except IntegrityError:
        if key is None:
            raise
        session.rollback()
        existing = replay(session, type(row), key, request_sha256, kind)
        if existing is None:
            raise
        return existing
    return row
