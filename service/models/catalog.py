"""What experiments are built from: hosts, VM templates, uploaded traces, and the plugin registry."""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import BigInteger, Boolean, Integer, String, Text, true
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from ..engine.config import PAGES_PER_MB
from .base import Base, utcnow


class _SpecItem:
    """A named, versioned JSON ``spec``: hosts and VM templates. ``version`` goes up on every
    update; it is the resource's ETag, and SQLAlchemy refuses an update made from a stale copy
    (optimistic locking)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.version}


class Host(_SpecItem, Base):
    """A host an experiment can name by id: ``spec`` is the scenario format's ``host`` object."""

    __tablename__ = "hosts"


class VMTemplate(_SpecItem, Base):
    """A VM configuration an experiment can name by id: ``spec`` is the scenario format's VM
    object without its name (the experiment names each VM, and may add a workload and events)."""

    __tablename__ = "vm_templates"


class Trace(Base):
    """An uploaded page-reference trace, stored once per content under the trace folder.

    ``length`` is the number of references in it, ``footprint_pages`` the distinct pages it
    touches, ``ref_count`` the number of experiments that use it (a trace in use is not deleted).
    """

    __tablename__ = "traces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(300), unique=True)   # relative to the trace folder
    format: Mapped[str] = mapped_column(String(16))                # text, gzip, npy
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(BigInteger)
    footprint_pages: Mapped[int] = mapped_column(BigInteger)
    # the LRU curve, working sets and reuse histogram (service.tracetools.analysis), computed at
    # upload; None for traces uploaded before migration 0008 until they are uploaded again
    analysis: Mapped[Optional[dict[str, Any]]] = mapped_column(default=None)
    # ref_count: a column_property counting its experiment_traces rows (models/experiments.py)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    @property
    def footprint_mb(self) -> float:
        return self.footprint_pages / PAGES_PER_MB


class PluginRegistration(Base):
    """A policy known to the database: the installed entry point it names, the version seen when
    it was last synchronised, and whether experiments may use it."""

    __tablename__ = "plugins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    version: Mapped[str] = mapped_column(String(64))
    distribution: Mapped[str] = mapped_column(String(200), default="")
    distribution_version: Mapped[str] = mapped_column(String(64), default="")
    entry_point: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text, default="")
    trusts_guest: Mapped[bool] = mapped_column(Boolean, default=False)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # the version an admin approved (POST /plugins, PATCH enabled) or the service enabled on its
    # own (VMEMLAB_PLUGINS_AUTO_ENABLE); None: never approved ("available")
    approved_version: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    registered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
