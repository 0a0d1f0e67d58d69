"""Studies made of many runs: sweeps (a scenario over a grid of values) and capacity searches (how
many copies of a VM fit). Each point or probe is an ordinary experiment with its runs, linked here,
so its runs show under ``/runs`` and in comparisons like any other."""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow
from .experiments import Experiment


class Sweep(Base):
    """``document`` is the experiment document as sent (the sweep's policies in it); ``axes`` is
    ``[{"path", "values"}]`` with ranges written out; ``scenario_sha256`` identifies the document
    without its name, so that sweeps of the same scenario can be found together."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    document: Mapped[dict[str, Any]]
    axes: Mapped[list[Any]]
    policies: Mapped[list[Any]]
    scenario_sha256: Mapped[str] = mapped_column(String(64), index=True)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(200), unique=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

    points: Mapped[list["SweepPoint"]] = relationship(back_populates="sweep", order_by="SweepPoint.index",
                                                      cascade="all, delete-orphan", passive_deletes=True)
    created = True          # False when an idempotency key replayed it


class SweepPoint(Base):
    """One point of a sweep: the axes' values there (in axis order) and the experiment that runs it."""

    __tablename__ = "sweep_points"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    values: Mapped[list[Any]]
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), unique=True)

    sweep: Mapped[Sweep] = relationship(back_populates="points")
    experiment: Mapped[Experiment] = relationship()


class CapacitySearch(Base):
    """``scenario`` is the validated scenario (every default written out) the copies are added to;
    ``policies`` the choices ``[{"name", "params"}]`` with effective parameters; ``sla``
    ``{"max_slowdown", "min_fairness", "max_blocked_fraction"}``. ``results`` is written once,
    when every policy's search has ended: per policy, service.capacity's Capacity as a dict plus
    ``status``, ``policy_version`` and ``error``."""

    __tablename__ = "capacity_searches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    scenario: Mapped[dict[str, Any]]
    vm_name: Mapped[str] = mapped_column(String(100))
    sla: Mapped[dict[str, Any]]
    policies: Mapped[list[Any]]
    max_count: Mapped[int] = mapped_column(Integer)
    scenario_sha256: Mapped[str] = mapped_column(String(64), index=True)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(200), unique=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[Optional[dt.datetime]]
    # set by cancel (and delete): no probe is added after it, whoever advances the search
    cancelled_at: Mapped[Optional[dt.datetime]]
    results: Mapped[Optional[list[Any]]]
    error: Mapped[Optional[str]] = mapped_column(Text)

    probes: Mapped[list["CapacityProbe"]] = relationship(
        back_populates="search", order_by="(CapacityProbe.policy_index, CapacityProbe.count)",
        cascade="all, delete-orphan", passive_deletes=True)
    created = True


class CapacityProbe(Base):
    """One probe: ``count`` copies under the search's policy number ``policy_index``. The
    primary key makes a probe unique, so two workers advancing the same search at once cannot
    both add it."""

    __tablename__ = "capacity_probes"

    search_id: Mapped[int] = mapped_column(ForeignKey("capacity_searches.id", ondelete="CASCADE"), primary_key=True)
    policy_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), unique=True)

    search: Mapped[CapacitySearch] = relationship(back_populates="probes")
    experiment: Mapped[Experiment] = relationship()
