"""API tokens: created, listed, revoked (``vmemlab tokens ...``) and checked, without Flask.

A token is ``vml_`` and 43 URL-safe characters (32 random bytes). Only its SHA-256 is stored. A
random 256-bit token needs no slow password hash: nobody can guess it, and a stolen database
gives nothing that authenticates. A presented token is hashed and looked up by its digest; the
digest found is compared again with ``hmac.compare_digest``, so that no comparison on the way
depends on how many leading characters of a guess were right.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ApiToken, utcnow

TOKEN_PREFIX = "vml_"
WRITE, ADMIN = "write", "admin"
ROLES = (WRITE, ADMIN)
PREFIX_CHARS = 12          # what listings show of a token: "vml_" and 8 characters


class TokenError(ValueError):
    """A token name, role or reference that cannot be used."""


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's id, name and role."""

    token_id: int
    name: str
    role: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str, role: str = WRITE) -> str:
    """Store a new token and return it: the only time it is ever seen. The caller commits."""
    return issue_token(session, name, role)[1]


def issue_token(session: Session, name: str, role: str = WRITE) -> tuple[ApiToken, str]:
    """``create_token``, with the stored row (id, prefix) as well."""
    name = name.strip()
    if not name or len(name) > 200:
        raise TokenError("a token needs a name of 1 to 200 characters")
    if role not in ROLES:
        raise TokenError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return _store(session, name, role, token), token


def _store(session: Session, name: str, role: str, token: str) -> ApiToken:
    row = ApiToken(name=name, role=role, prefix=token[:PREFIX_CHARS], sha256=digest(token))
    session.add(row)
    session.flush()
    return row


def list_tokens(session: Session, include_revoked: bool = False) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_token(session: Session, reference: str) -> ApiToken:
    """Revoke the token with this id, or the only unrevoked one with this name or prefix. The
    caller commits. Revoking is for good: a revoked token never authenticates again."""
    rows = [row for row in list_tokens(session)
            if reference in (str(row.id), row.name, row.prefix) or
            (reference.startswith(TOKEN_PREFIX) and len(reference) > PREFIX_CHARS and row.sha256 == digest(reference))]
    if not rows:
        raise TokenError(f"no unrevoked token with id, name or prefix {reference!r}")
    if len(rows) > 1:
        raise TokenError(f"{len(rows)} tokens match {reference!r} ({', '.join(str(r.id) for r in rows)}); "
                         "revoke by id")
    rows[0].revoked_at = utcnow()
    return rows[0]


def authenticate(session: Session, token: str) -> Optional[Principal]:
    """The principal of a presented token, or None if it is unknown or revoked."""
    wanted = digest(token)
    row = session.scalar(select(ApiToken).where(ApiToken.sha256 == wanted, ApiToken.revoked_at.is_(None)))
    if row is None or not hmac.compare_digest(row.sha256, wanted):
        return None
    return Principal(row.id, row.name, row.role)


CONFIGURED_NAME = "VMEMLAB_ADMIN_TOKEN"


def ensure_configured_token(session: Session, token: str) -> str:
    """Store the admin token given in ``VMEMLAB_ADMIN_TOKEN`` (its hash) unless it is there
    already. A new value replaces the old: earlier configured tokens are revoked (rotating a
    leaked secret is changing the variable). Returns ``added``, ``present``, ``revoked`` (it
    stays revoked: revoking is for good, so the variable must change) or ``not admin`` (the
    value is a token created with another role). The caller commits."""
    row = session.scalar(select(ApiToken).where(ApiToken.sha256 == digest(token)))
    if row is not None:
        if row.revoked_at is not None:
            return "revoked"
        return "present" if row.role == ADMIN else "not admin"
    for earlier in session.scalars(select(ApiToken).where(ApiToken.name == CONFIGURED_NAME,
                                                         ApiToken.revoked_at.is_(None))):
        earlier.revoked_at = utcnow()
    _store(session, CONFIGURED_NAME, ADMIN, token)
    return "added"


def has_tokens(session: Session) -> bool:
    return session.scalar(select(ApiToken.id).where(ApiToken.revoked_at.is_(None)).limit(1)) is not None
