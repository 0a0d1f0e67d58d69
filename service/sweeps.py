"""Creating and reading sweeps: a scenario run at every point of a grid of values, under every
policy. Each point is an ordinary experiment (one queued run per policy), stored with the sweep in
one transaction; the caller commits, then enqueues every run as one Celery group.

The request::

    {"name": "...", "scenario": <experiment document>, "policies": [{"name", "params"}, ...],
     "axes": [{"path": "host.memory_mb", "values": [4096, 6144]},
              {"path": "policies[esx].params.idle_tax_pct", "start": 0, "stop": 90, "step": 30}]}

Problems are reported by where they are in the request: ``axes[1]`` for an axis that names
nothing or a value its field refuses, ``scenario.<path>`` for the scenario itself, ``policies[i]``.
"""
from __future__ import annotations

import copy
import csv
import io
import re
from typing import Any, Iterator, Optional, Sequence

from sqlalchemy.orm import Session

from .experiments import canonical_json, delete_with_experiments, sha256_of, store_experiment, validate_document
from .idempotency import add_or_replay, replay
from .models import METRIC_COLUMNS, Run, Sweep, SweepPoint
from .runs import cancel_unfinished
from .scenario import ROOT, ScenarioValidationError
from .settings import Settings, get_settings
from .sweep_axes import (
    Axis, AxisError, axis_from_json, blamed_axis, point_count, point_document, point_label, points,
)

RESULT_FIELDS = ("point", "policy", "policy_version", "params", "run_id", "experiment_id", "status", "error")


def create_sweep(session: Session, body: Any, idempotency_key: Optional[str] = None, *,
                 settings: Optional[Settings] = None) -> Sweep:
    """Validate the request, store the sweep and one experiment per point (flushed, not
    committed). ScenarioValidationError names each problem; IdempotencyConflict for a key used
    with another body; a replayed key returns the earlier sweep with ``created`` False."""
    settings = settings or get_settings()
    request_sha256 = sha256_of(body)
    existing = replay(session, Sweep, idempotency_key, request_sha256, "sweep")
    if existing is not None:
        return existing
    document, axes = _read_request(body, settings)
    sweep = Sweep(name=str(body.get("name") or document.get("name") or "sweep")[:200], document=document,
                  axes=[{"path": a.path, "values": list(a.values)} for a in axes],
                  policies=document.get("policies") or [], idempotency_key=idempotency_key,
                  request_sha256=request_sha256,
                  scenario_sha256=sha256_of({k: v for k, v in document.items() if k not in ("name", "description")}))
    # every point validated (reads only) before anything is written: on SQLite the write lock is
    # taken once, for the inserts
    valid_points, runs = [], 0
    for values in points(axes):
        point_doc = _point_document(document, axes, values)
        point_doc["name"] = f"{sweep.name} [{point_label(axes, values)}]"[:200]
        try:
            valid = validate_document(session, point_doc, settings=settings)
        except ScenarioValidationError as exc:
            raise ScenarioValidationError(_blame(exc.errors, axes, point_doc, values, "policies" in body)) from None
        runs += len(valid.pinned)
        if runs > settings.max_sweep_runs:
            raise ScenarioValidationError({"axes": [f"more than {settings.max_sweep_runs} runs (points times "
                                                    "policies) in one sweep (VMEMLAB_MAX_SWEEP_RUNS)"]})
        valid_points.append((values, valid, sha256_of(point_doc)))
    for index, (values, valid, point_sha256) in enumerate(valid_points):
        experiment = store_experiment(session, valid, request_sha256=point_sha256)
        sweep.points.append(SweepPoint(index=index, values=list(values), experiment=experiment))
    return add_or_replay(session, sweep, "sweep")


def _read_request(body: Any, settings: Settings) -> tuple[dict, list[Axis]]:
    if not isinstance(body, dict):
        raise ScenarioValidationError({ROOT: ['a sweep is a JSON object: {"scenario", "axes", "policies"}']})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(body) - {"name", "scenario", "axes", "policies"})
    for key in unknown:
        errors[str(key)] = ["unknown field; a sweep has name, scenario, axes and policies"]
    if "name" in body and not (isinstance(body["name"], str) and 0 < len(body["name"]) <= 200):
        errors["name"] = ["a text of 1 to 200 characters"]
    document = body.get("scenario")
    if not isinstance(document, dict):
        errors["scenario"] = ["required: the experiment document (scenario format) to sweep"]
    raw_axes = body.get("axes")
    if not isinstance(raw_axes, list) or not raw_axes:
        errors["axes"] = ['required: a non-empty list of {"path", "values"} or {"path", "start", "stop", "step"}']
        raw_axes = []
    axes = []
    for i, item in enumerate(raw_axes):
        try:
            axes.append(axis_from_json(item))
        except AxisError as exc:
            errors[f"axes[{i}]"] = [str(exc)]
    if len({a.path for a in axes}) < len(axes):
        errors.setdefault("axes", []).append("each path at most once")
    if "policies" in body and not isinstance(body["policies"], list):
        errors["policies"] = ['a list of {"name", "params"}']
    if errors:
        raise ScenarioValidationError(errors)
    policies = body.get("policies") if "policies" in body else document.get("policies")
    total = point_count(axes) * max(1, len(policies) if isinstance(policies, list) else 1)
    if total > settings.max_sweep_runs:
        raise ScenarioValidationError({"axes": [f"{point_count(axes)} points make {total} runs; at most "
                                                f"{settings.max_sweep_runs} runs in one sweep "
                                                "(VMEMLAB_MAX_SWEEP_RUNS)"]})
    document = copy.deepcopy(document)
    if "policies" in body:
        document["policies"] = copy.deepcopy(body["policies"])
    return document, axes


def _point_document(document: dict, axes: Sequence[Axis], values: Sequence[Any]) -> dict:
    try:
        return point_document(document, axes, values)
    except AxisError as exc:
        raise ScenarioValidationError({f"axes[{exc.args[1]}]": [exc.args[0]]}) from None


def _blame(errors: dict[str, list[str]], axes: Sequence[Axis], point_doc: dict, values: Sequence[Any],
           policies_in_body: bool) -> dict[str, list[str]]:
    """The errors of a point's experiment, named by the axis that put the bad value there, else
    by where they are in the request."""
    blamed: dict[str, list[str]] = {}
    for path, messages in errors.items():
        owner = blamed_axis(point_doc, axes, path)
        if owner is not None:
            key = f"axes[{owner}]"
            text = [f"{axes[owner].path}={values[owner]!r}: {path}: {m}" for m in messages]
        else:
            in_body = path == ROOT or (policies_in_body and path.startswith("policies"))
            key = path if in_body else f"scenario.{path}"
            text = [f"at {point_label(axes, values)}: {m}" for m in messages]
        blamed.setdefault(key, []).extend(text)
    return blamed


# --- reading -------------------------------------------------------------------------------------

def sweep_runs(sweep: Sweep) -> list[Run]:
    return [run for point in sweep.points for run in point.experiment.runs]


def progress(sweep: Sweep) -> dict[str, Any]:
    """``status`` over all runs, ``progress`` (0..1), ``runs_total`` and ``runs_by_status``."""
    runs = sweep_runs(sweep)
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run.status] = by_status.get(run.status, 0) + 1
    return {"status": overall(by_status), "progress": sum(r.progress for r in runs) / len(runs) if runs else 0.0,
            "runs_total": len(runs), "runs_by_status": by_status}


def overall(by_status: dict[str, int]) -> str:
    """One word for many runs: queued, running, succeeded, failed or cancelled."""
    if by_status.get("queued") or by_status.get("running"):
        return "queued" if set(by_status) == {"queued"} else "running"
    for status in ("failed", "cancelled"):
        if by_status.get(status):
            return status
    return "succeeded"


def results(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per point and policy, in point order: the point's values by axis path, the run's
    identity and status, and its summary metrics (None until it succeeded)."""
    paths = [axis["path"] for axis in sweep.axes]
    rows = []
    for point in sweep.points:
        for run in point.experiment.runs:
            rows.append({
                "point": dict(zip(paths, point.values)), "policy": run.policy_name,
                "policy_version": run.policy_version, "params": run.params, "run_id": run.id,
                "experiment_id": point.experiment_id, "status": run.status, "error": run.error,
                "metrics": run.metrics if run.status == "succeeded" else {m: None for m in METRIC_COLUMNS}})
    return rows


def results_csv(sweep: Sweep) -> Iterator[str]:
    """The results as CSV: a column per axis, then the run's identity, parameters (canonical JSON),
    status and error, then each metric."""
    paths = [axis["path"] for axis in sweep.axes]
    identity = [field for field in RESULT_FIELDS if field != "point"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(paths + identity + list(METRIC_COLUMNS))
    for row in results(sweep):
        writer.writerow([_cell(row["point"][p]) for p in paths] + [_cell(row[field]) for field in identity]
                        + [_cell(row["metrics"][m]) for m in METRIC_COLUMNS])
    yield buffer.getvalue()


def _cell(value: Any) -> Any:
    """Text fields that a spreadsheet would take for a formula are written as text."""
    if value is None:
        return ""
    if isinstance(value, str) and re.match(r"^[=+\-@\t\r]", value):
        return "'" + value
    if isinstance(value, (dict, list, bool)):
        return canonical_json(value)          # as in the JSON results
    return value


def cancel_sweep(session: Session, sweep: Sweep) -> int:
    """Cancel every run of the sweep not yet finished; how many were asked to stop."""
    return cancel_unfinished(session, sweep_runs(sweep))


def delete_sweep(session: Session, sweep: Sweep) -> None:
    """The sweep, its points' experiments and their runs. The caller cancels unfinished runs."""
    delete_with_experiments(session, sweep, [point.experiment for point in sweep.points])


def answer(sweep: Sweep, rows: Optional[list[dict[str, Any]]] = None) -> str:
    """Per policy, its worst slowdown over the sweep and where; the points where VMs were
    refused. Says so while runs are still going."""
    rows = results(sweep) if rows is None else rows
    done = [row for row in rows if row["status"] == "succeeded"]
    size = f"{len(sweep.points)} point{'s' if len(sweep.points) != 1 else ''} x {len(sweep.policies) or 1} " \
           f"polic{'ies' if (len(sweep.policies) or 1) != 1 else 'y'}"
    if not done:
        return f"Sweep of {', '.join(a['path'] for a in sweep.axes)} over {size}: no run has succeeded yet."
    parts = []
    for policy in dict.fromkeys(row["policy"] for row in rows):
        mine = [row for row in done if row["policy"] == policy and row["metrics"]["slowdown"] is not None]
        if not mine:
            parts.append(f"{policy} no result")
            continue
        worst = max(mine, key=lambda row: row["metrics"]["slowdown"])
        refused = sum(1 for row in mine if row["metrics"]["vms_refused"])
        where = ", ".join(f"{path}={value}" for path, value in worst["point"].items())
        parts.append(f"{policy} {worst['metrics']['slowdown']:.2f}x at {where}"
                     + (f" (VMs refused at {refused} point{'s' if refused != 1 else ''})" if refused else ""))
    pending = len(rows) - len(done)
    tail = f" ({pending} of {len(rows)} runs not succeeded)" if pending else ""
    return f"Sweep of {', '.join(a['path'] for a in sweep.axes)} over {size}, worst slowdown: {'; '.join(parts)}.{tail}"
