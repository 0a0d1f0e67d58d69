"""``/``: the history. Experiments, sweeps and capacity searches in one list, newest first,
filtered by name, policy, status and date, a page at a time, each with its one-line result and
its report. The points of sweeps and the probes of capacity searches are experiments too; they
are listed under their study, not here."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Optional

from flask import render_template, request, url_for
from sqlalchemy import ColumnElement, and_, exists, func, literal, not_, select, union_all
from sqlalchemy.orm import selectinload

from ..answers import runs_answer
from ..api.common import db
from ..capacity_searches import search_answer, search_results, search_status, with_probes
from ..models import CapacityProbe, CapacitySearch, Experiment, Run, Sweep, SweepPoint
from ..sweeps import answer as sweep_answer
from ..sweeps import overall
from ..sweeps import progress as sweep_progress
from . import web
from .common import decimal

PAGE_SIZE = 20
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
KINDS = {"experiment": Experiment, "sweep": Sweep, "capacity search": CapacitySearch}


@dataclass
class Filters:
    name: str = ""
    policy: str = ""
    status: str = ""
    since: Optional[dt.date] = None
    until: Optional[dt.date] = None


def _runs_of(kind: str, cond: ColumnElement[bool]) -> ColumnElement[bool]:
    """Whether a row of this kind has a run meeting ``cond``."""
    if kind == "experiment":
        return exists().where(Run.experiment_id == Experiment.id, cond)
    if kind == "sweep":
        return exists().where(SweepPoint.sweep_id == Sweep.id, Run.experiment_id == SweepPoint.experiment_id, cond)
    return exists().where(CapacityProbe.search_id == CapacitySearch.id,
                          Run.experiment_id == CapacityProbe.experiment_id, cond)


def _status_is(kind: str, status: str) -> ColumnElement[bool]:
    """The one word of service.sweeps.overall, in SQL; a capacity search by its own columns."""
    if kind == "capacity search":
        return {"running": and_(CapacitySearch.finished_at.is_(None), CapacitySearch.cancelled_at.is_(None)),
                "cancelled": CapacitySearch.cancelled_at.is_not(None),
                "failed": and_(CapacitySearch.error.is_not(None), CapacitySearch.cancelled_at.is_(None)),
                "succeeded": and_(CapacitySearch.finished_at.is_not(None), CapacitySearch.error.is_(None),
                                  CapacitySearch.cancelled_at.is_(None))}.get(status, literal(False))
    unfinished = _runs_of(kind, Run.status.in_(("queued", "running")))
    return {"queued": and_(unfinished, not_(_runs_of(kind, Run.status != "queued"))),
            "running": and_(unfinished, _runs_of(kind, Run.status != "queued")),
            "failed": and_(not_(unfinished), _runs_of(kind, Run.status == "failed")),
            "cancelled": and_(not_(unfinished), not_(_runs_of(kind, Run.status == "failed")),
                              _runs_of(kind, Run.status == "cancelled")),
            "succeeded": not_(_runs_of(kind, Run.status != "succeeded"))}[status]


def _selects(filters: Filters) -> list:
    out = []
    for kind, model in KINDS.items():
        if filters.status == "queued" and kind == "capacity search":
            continue
        conditions: list[ColumnElement[bool]] = []
        if kind == "experiment":       # a study's points and probes are listed under the study
            conditions += [not_(exists().where(SweepPoint.experiment_id == Experiment.id)),
                           not_(exists().where(CapacityProbe.experiment_id == Experiment.id))]
        if filters.name:
            conditions.append(func.lower(model.name).contains(filters.name.lower(), autoescape=True))
        if filters.policy:
            conditions.append(_runs_of(kind, Run.policy_name == filters.policy))
        if filters.status:
            conditions.append(_status_is(kind, filters.status))
        if filters.since:
            conditions.append(model.created_at >= dt.datetime.combine(filters.since, dt.time(), dt.timezone.utc))
        if filters.until:
            end = dt.datetime.combine(filters.until + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
            conditions.append(model.created_at < end)
        out.append(select(literal(kind).label("kind"), model.id.label("id"), model.created_at.label("created_at"))
                   .where(*conditions))
    return out


def _date(text: str) -> Optional[dt.date]:
    try:
        day = dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None
    # the day after must exist too (the "until" bound): 9999-12-31 is read as no bound
    return day if day is None or day < dt.date.max else None


@web.get("/")
def history():
    args = request.args
    filters = Filters(name=args.get("name", "").strip(), policy=args.get("policy", "").strip(),
                      status=args.get("status", "") if args.get("status") in STATUSES else "",
                      since=_date(args.get("since", "")), until=_date(args.get("until", "")))
    page = max(1, min(decimal(args.get("page", "")) or 1, 10**6))
    everything = union_all(*_selects(filters)).subquery()
    total = db().scalar(select(func.count()).select_from(everything))
    keys = db().execute(select(everything.c.kind, everything.c.id)
                        .order_by(everything.c.created_at.desc(), everything.c.id.desc())
                        .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    rows = _rows(keys)
    policies = sorted(db().scalars(select(Run.policy_name).distinct()))
    shown = {k: v for k, v in args.items() if k != "page" and v}
    pages = max(1, -(-total // PAGE_SIZE))
    return render_template(
        "history.html", rows=rows, filters=filters, statuses=STATUSES, policies=policies, total=total, page=page,
        pages=pages, prev_url=url_for("web.history", **shown, page=page - 1) if page > 1 else None,
        next_url=url_for("web.history", **shown, page=page + 1) if page < pages else None)


def _rows(keys: list) -> list[dict[str, Any]]:
    """The page's rows, loaded by kind, in the listing's order."""
    wanted: dict[str, list[int]] = {}
    for kind, ident in keys:
        wanted.setdefault(kind, []).append(ident)
    loaded: dict[tuple[str, int], dict[str, Any]] = {}
    session = db()
    if wanted.get("experiment"):
        for e in session.scalars(select(Experiment).options(selectinload(Experiment.runs))
                                 .where(Experiment.id.in_(wanted["experiment"]))):
            loaded["experiment", e.id] = _experiment_row(e)
    if wanted.get("sweep"):
        options = selectinload(Sweep.points).selectinload(SweepPoint.experiment).selectinload(Experiment.runs)
        for s in session.scalars(select(Sweep).options(options).where(Sweep.id.in_(wanted["sweep"]))):
            loaded["sweep", s.id] = {"kind": "sweep", "id": s.id, "name": s.name, "created_at": s.created_at,
                                     "status": sweep_progress(s)["status"], "answer": sweep_answer(s), "runs": [],
                                     "report": url_for("report.sweep_report", sweep_id=s.id)}
    if wanted.get("capacity search"):
        for c in session.scalars(select(CapacitySearch).options(*with_probes())
                                 .where(CapacitySearch.id.in_(wanted["capacity search"]))):
            results = search_results(c)
            loaded["capacity search", c.id] = {
                "kind": "capacity search", "id": c.id, "name": c.name, "created_at": c.created_at,
                "status": search_status(results), "answer": search_answer(c, results), "runs": [],
                "report": url_for("report.capacity_report", search_id=c.id)}
    return [loaded[key] for key in map(tuple, keys) if key in loaded]


def _experiment_row(e: Experiment) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for run in e.runs:
        by_status[run.status] = by_status.get(run.status, 0) + 1
    finished = all(run.finished for run in e.runs)
    answer = runs_answer(e.scenario["host"]["memory_mb"], len(e.scenario["vms"]),
                         [(run.policy_name, run.status, run.summary) for run in e.runs])
    return {"kind": "experiment", "id": e.id, "name": e.name, "created_at": e.created_at,
            "status": overall(by_status), "answer": answer, "runs": list(e.runs),
            "report": url_for("report.experiment_report", experiment_id=e.id),
            "progress": None if finished else url_for("web.progress", experiment_id=e.id)}
