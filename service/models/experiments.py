"""Experiments: a validated scenario snapshot and the policies to run it under (one run each)."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Optional

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from .base import Base, utcnow

from .catalog import Trace

if TYPE_CHECKING:
    from .catalog import Host, VMTemplate
    from .runs import Run


class Experiment(Base):
    """``scenario`` is the whole scenario as validated, every default written out, with host and
    template references resolved and trace phases naming stored trace files (relative to the
    trace folder): a run needs nothing else to be reproduced. ``policies`` is the list asked for,
    ``[{"name", "params"}]``. ``host_id`` records which stored host it came from, if any."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int] = mapped_column(BigInteger)
    duration_s: Mapped[float] = mapped_column(Float)
    scenario: Mapped[dict[str, Any]]
    policies: Mapped[list[Any]]
    host_id: Mapped[Optional[int]] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"), index=True)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(200), unique=True)
    request_sha256: Mapped[str] = mapped_column(String(64))   # the request body, for idempotent replays
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

    host: Mapped[Optional["Host"]] = relationship()
    runs: Mapped[list["Run"]] = relationship(back_populates="experiment", order_by="Run.id",
                                             cascade="all, delete-orphan", passive_deletes=True)
    traces: Mapped[list["Trace"]] = relationship(secondary="experiment_traces", order_by="Trace.id")
    templates: Mapped[list["VMTemplate"]] = relationship(secondary="experiment_templates", order_by="VMTemplate.id")

    # set by service.experiments.create_experiment: False when an idempotency key replayed it
    created = True


class ExperimentTrace(Base):
    """Which stored traces an experiment uses; a trace in use cannot be deleted."""

    __tablename__ = "experiment_traces"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    trace_id: Mapped[int] = mapped_column(ForeignKey("traces.id", ondelete="RESTRICT"), primary_key=True, index=True)


# How many experiments use a trace: counted, not kept beside the link rows (models/catalog.py)
Trace.ref_count = column_property(
    select(func.count()).where(ExperimentTrace.trace_id == Trace.id).correlate_except(ExperimentTrace)
    .scalar_subquery())


class ExperimentTemplate(Base):
    """Which stored VM templates an experiment was built from; a template in use cannot be deleted."""

    __tablename__ = "experiment_templates"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("vm_templates.id", ondelete="RESTRICT"), primary_key=True,
                                             index=True)
