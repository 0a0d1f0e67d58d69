"""API tokens. Only a token's SHA-256 is stored: the token itself is shown once, when it is
created (``vmemlab tokens create``), and cannot be read back from the database."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class ApiToken(Base):
    """A bearer token. ``role`` is ``write`` (create and change experiments, hosts, templates,
    traces and runs) or ``admin`` (that, plus registering, enabling and disabling plugins).
    ``prefix`` is the token's first characters, to tell tokens apart in listings."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(default=None)
