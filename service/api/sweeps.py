"""``/api/v1/sweeps``: a scenario at every point of a grid of values, under every policy. Each
point is an experiment (its runs are ordinary runs); all the runs are queued as one Celery group.
If the broker cannot take them, the sweep is withdrawn and the answer is 503 (api.submission)."""
from __future__ import annotations

from flask import Response, url_for
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..models import Experiment, Sweep, SweepPoint
from ..runs import enqueue_group
from ..sweeps import cancel_sweep, create_sweep, delete_sweep, results, results_csv, sweep_runs
from .common import Blueprint, Listing, SQLPage, db, documented_errors, settings
from .experiments import IdempotencyHeadersSchema
from .schemas.studies import (
    StudyQuerySchema, SweepDetailSchema, SweepResultsQuerySchema, SweepResultsSchema, SweepSchema, sweep_view,
)
from .submission import create_and_queue

blp = Blueprint("sweeps", __name__, description="Sweeps: a scenario over a grid of values, one run per point and "
                                                "policy.")
AXIS = {"type": "object", "required": ["path"], "properties": {
    "path": {"type": "string", "description": "host.memory_mb, vms[web].count, policies[esx].params.idle_tax_pct"},
    "values": {"type": "array", "minItems": 1, "items": {}},
    "start": {"type": "number"}, "stop": {"type": "number"}, "step": {"type": "number"}}}
SWEEP_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["scenario", "axes"], "properties": {
        "name": {"type": "string", "maxLength": 200},
        "scenario": {"$ref": "#/components/schemas/ExperimentDocument"},
        "axes": {"type": "array", "minItems": 1, "items": AXIS},
        "policies": {"type": "array", "items": {"$ref": "#/components/schemas/PolicyChoiceDoc"}}},
    "example": {"name": "seed by host size", "scenario": {"duration_s": 60, "host": {"memory_mb": 6144},
                                                          "vms": [{"name": "web", "memory_mb": 4096}]},
                "axes": [{"path": "host.memory_mb", "values": [4096, 6144, 8192]},
                         {"path": "policies[esx].params.idle_tax_pct", "start": 0, "stop": 90, "step": 45}],
                "policies": [{"name": "static"}, {"name": "esx"}]}}}}}


def _loaded():
    return (selectinload(Sweep.points).selectinload(SweepPoint.experiment).selectinload(Experiment.runs),)


def load_sweep(sweep_id: int) -> Sweep:
    sweep = db().scalar(select(Sweep).options(*_loaded()).where(Sweep.id == sweep_id))
    if sweep is None:
        abort(404, message=f"no sweep with id {sweep_id}")
    return sweep


@blp.route("")
class Sweeps(MethodView):
    @blp.arguments(StudyQuerySchema, location="query")
    @blp.response(200, SweepSchema(many=True))
    @blp.paginate(SQLPage)
    @blp.doc(summary="List sweeps", description="Newest first, with their progress and one-line answer.")
    def get(self, args: dict):
        statement = select(Sweep).options(*_loaded()).order_by(Sweep.id.desc())
        if "name" in args:
            statement = statement.where(Sweep.name == args["name"])
        if "scenario_sha256" in args:
            statement = statement.where(Sweep.scenario_sha256 == args["scenario_sha256"])
        return Listing(statement)

    @blp.arguments(IdempotencyHeadersSchema, location="headers")
    @blp.response(202, SweepDetailSchema)
    @blp.alt_response(200, schema=SweepDetailSchema, success=True,
                      description="replayed: this Idempotency-Key was used for the same body before")
    @documented_errors(blp, 400, 409, 415, 503)
    @blp.doc(summary="Create a sweep and queue one run per point and policy", requestBody=SWEEP_BODY,
             description="An axis is a path into the experiment document (`host.memory_mb`, `vms[web].count`, "
                         "`vms[sql].workload.phases[0].footprint_mb`, `policies[esx].params.idle_tax_pct`) and its "
                         "values, a list or start/stop/step. Errors name the axis (`axes[1]`), or the field "
                         "(`scenario.vms[0].memory_mb`).")
    def post(self, headers: dict):
        sweep = create_and_queue(
            "sweep", lambda session, body: create_sweep(session, body, headers.get("idempotency_key"),
                                                        settings=settings()),
            sweep_runs_ids, delete_sweep, enqueue_group)
        location = {"Location": url_for(".SweepItem", sweep_id=sweep.id)}
        return sweep_view(load_sweep(sweep.id), detail=True), 202 if sweep.created else 200, location


def sweep_runs_ids(sweep: Sweep) -> list[int]:
    return [run.id for run in sweep_runs(sweep)]


@blp.route("/<int:sweep_id>")
class SweepItem(MethodView):
    @blp.response(200, SweepDetailSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Get a sweep: progress, the one-line answer, and the results table so far")
    def get(self, sweep_id: int) -> dict:
        return sweep_view(load_sweep(sweep_id), detail=True)

    @blp.response(204)
    @documented_errors(blp, 404)
    @blp.doc(summary="Delete a sweep with its points' experiments and runs (unfinished runs are cancelled)")
    def delete(self, sweep_id: int) -> None:
        sweep = load_sweep(sweep_id)
        session = db()
        cancel_sweep(session, sweep)
        delete_sweep(session, sweep)
        session.commit()


CSV_BODY = {"schema": {"type": "string", "description": "CSV with a header row"}}


@blp.route("/<int:sweep_id>/results")
class SweepResults(MethodView):
    @blp.arguments(SweepResultsQuerySchema, location="query")
    @blp.response(200, SweepResultsSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="The results table as JSON",
             description="One row per point and policy. The same as CSV: `GET /sweeps/{sweep_id}/results.csv` "
                         "(`format=csv` here still answers CSV, for clients written before that path).",
             responses={"200": {"description": "OK", "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/SweepResults"}},
                 "text/csv": CSV_BODY}}})
    def get(self, args: dict, sweep_id: int):
        sweep = load_sweep(sweep_id)
        if args["format"] == "csv":
            return _csv(sweep)
        return {"results": results(sweep)}


@blp.route("/<int:sweep_id>/results.csv")
class SweepResultsCsv(MethodView):
    @documented_errors(blp, 404)
    @blp.doc(summary="The results table as a CSV download",
             description="One row per point and policy: a column per axis (named by its path), then policy, "
                         "policy_version, params (JSON), run_id, experiment_id, status, error and each summary "
                         "metric.",
             responses={"200": {"description": "OK", "content": {"text/csv": CSV_BODY}}})
    def get(self, sweep_id: int) -> Response:
        return _csv(load_sweep(sweep_id))


def _csv(sweep: Sweep) -> Response:
    return Response(results_csv(sweep), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="sweep-{sweep.id}-results.csv"'})


@blp.route("/<int:sweep_id>/cancel")
class SweepCancel(MethodView):
    @blp.response(202, SweepSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Cancel the runs of the sweep not yet finished",
             description="Queued runs are cancelled at once, running ones at their worker's next heartbeat.")
    def post(self, sweep_id: int) -> dict:
        sweep = load_sweep(sweep_id)
        session = db()
        cancel_sweep(session, sweep)
        session.commit()
        session.expire_all()
        return sweep_view(load_sweep(sweep_id))
