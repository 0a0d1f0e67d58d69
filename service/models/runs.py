"""Runs: one per experiment and policy. The row is the task's lock and its record."""
from __future__ import annotations

import datetime as dt
import enum
import json
import math
import zlib
from typing import TYPE_CHECKING, Any, Optional

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
    false, text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow

if TYPE_CHECKING:
    from .experiments import Experiment


class RunStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


FINISHED = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)

# metric column -> where the engine's summary keeps it
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "slowdown": ("slowdown",),
    "fairness": ("fairness",),
    "peak_used_mb": ("host", "peak_used_mb"),
    "mean_used_mb": ("host", "mean_used_mb"),
    "host_swap_peak_mb": ("host", "host_swap_peak_mb"),
    "smart_paging_peak_mb": ("host", "smart_paging_peak_mb"),
    "sharing_saved_mb_mean": ("host", "sharing_saved_mb_mean"),
    "overcommit_ratio": ("host", "overcommit_ratio"),
    "vms_refused": ("vms_refused",),
    "vms_blocked": ("vms_blocked",),
}


def metrics_from_summary(summary: Any) -> dict[str, Any]:
    """The metric columns of an engine summary, as the worker stores them (it makes non-finite
    numbers None first): a missing, non-numeric or non-finite value is None, so a failed run's
    empty summary gives every column, each None."""
    metrics: dict[str, Any] = {}
    for column, path in METRIC_COLUMNS.items():
        value = summary
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if hasattr(value, "item") and callable(value.item):      # numpy scalars
            value = value.item()
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        metrics[column] = value if numeric and math.isfinite(value) else None
    return metrics


class Run(Base):
    """One simulation of an experiment under one policy.

    Lifecycle: ``queued`` -> ``running`` (``worker``, ``started_at``, ``heartbeat_at`` and
    ``progress`` kept fresh) -> ``succeeded`` | ``failed`` (``error``) | ``cancelled``. A worker
    claims a run by moving it to running and adding one to ``attempts``; the attempt number is its
    lease, checked by every later write, so a worker that lost the run can no longer touch it.

    ``policy_version`` is pinned when the run is created; a worker with another version installed
    refuses the run. ``fingerprint`` is a SHA-256 of the simulated configuration (scenario without
    its name and description, policy name, version and effective parameters): equal fingerprints
    with equal engine versions give identical results. The summary metrics one filters or sorts by
    are columns; the full summary is JSON; the per-epoch series live in ``run_series``.
    """

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[Optional[int]] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED.value, index=True)

    policy_name: Mapped[str] = mapped_column(String(100))
    policy_version: Mapped[str] = mapped_column(String(64))
    plugin_distribution: Mapped[str] = mapped_column(String(200), default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    engine_version: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger, index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)

    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[Optional[dt.datetime]]
    finished_at: Mapped[Optional[dt.datetime]]
    heartbeat_at: Mapped[Optional[dt.datetime]]
    # when the run's task was last sent to the broker (None: when it was created); a run still
    # queued long after this is sent again, in case the broker lost the message (service.runs)
    published_at: Mapped[Optional[dt.datetime]]
    worker: Mapped[Optional[str]] = mapped_column(String(300))
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    error: Mapped[Optional[str]] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    summary: Mapped[Optional[dict[str, Any]]]
    slowdown: Mapped[Optional[float]] = mapped_column(Float, index=True)
    fairness: Mapped[Optional[float]] = mapped_column(Float, index=True)
    peak_used_mb: Mapped[Optional[float]] = mapped_column(Float, index=True)
    mean_used_mb: Mapped[Optional[float]] = mapped_column(Float)
    host_swap_peak_mb: Mapped[Optional[float]] = mapped_column(Float, index=True)
    smart_paging_peak_mb: Mapped[Optional[float]] = mapped_column(Float)
    sharing_saved_mb_mean: Mapped[Optional[float]] = mapped_column(Float)
    overcommit_ratio: Mapped[Optional[float]] = mapped_column(Float, index=True)
    vms_refused: Mapped[Optional[int]] = mapped_column(Integer)
    vms_blocked: Mapped[Optional[int]] = mapped_column(Integer)

    experiment: Mapped["Experiment"] = relationship(back_populates="runs")
    series_row: Mapped[Optional["RunSeries"]] = relationship(
        back_populates="run", uselist=False, lazy="raise_on_sql", cascade="all, delete-orphan",
        passive_deletes=True)

    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in RunStatus)})", name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        Index("ix_runs_status_heartbeat_at", "status", "heartbeat_at"),
        Index("ix_runs_policy_name_policy_version", "policy_name", "policy_version"),
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def metrics(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in METRIC_COLUMNS}

    @property
    def wall_s(self) -> Optional[float]:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


SERIES_ENCODING = "json+zlib"


class RunSeries(Base):
    """A succeeded run's per-epoch series and event log, compressed, apart from the run row so
    that listing runs never reads them."""

    __tablename__ = "run_series"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    encoding: Mapped[str] = mapped_column(String(32), default=SERIES_ENCODING)
    epochs: Mapped[int] = mapped_column(Integer)
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    events: Mapped[list[Any]] = mapped_column(default=list)

    run: Mapped["Run"] = relationship(back_populates="series_row")

    @classmethod
    def pack(cls, run_id: int, series: dict[str, Any], events: list[Any]) -> "RunSeries":
        raw = json.dumps(series, separators=(",", ":"), allow_nan=True).encode()
        return cls(run_id=run_id, encoding=SERIES_ENCODING, epochs=len(series.get("time_s", [])),
                   raw_bytes=len(raw), data=zlib.compress(raw, 6), events=events)

    def unpack(self) -> dict[str, Any]:
        if self.encoding != SERIES_ENCODING:
            raise ValueError(f"run {self.run_id}: unknown series encoding {self.encoding!r}")
        return json.loads(zlib.decompress(self.data))
