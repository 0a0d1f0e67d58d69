"""``/api/v1/experiments``: a scenario, a host and VMs (inline or stored), and the policies to
compare. Creating one validates everything first, stores it with one queued run per policy in one
transaction, commits, then queues the runs on Celery.

If the broker cannot take the runs, the experiment is withdrawn (deleted again) and the answer is
503 with ``Retry-After``: nothing is left behind that no worker will ever run, and retrying the same
request (with the same ``Idempotency-Key``, if any) is safe.
"""
from __future__ import annotations

from flask import request, url_for
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import EXCLUDE, Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..experiments import create_experiment, delete_experiment
from ..models import CapacityProbe, Experiment, Run, SweepPoint
from ..policies import DEFAULT_POLICY
from ..runs import compare, enqueue, request_cancel
from .common import Blueprint, Listing, SQLPage, db, documented_errors, invalid, read_db, settings
from .finished import cached, finished_experiment_version, set_version_etag
from .reads import retrying_reads
from .response_cache import keep_answer
from .schemas.experiments import (
    ExperimentComparisonQuerySchema, ExperimentDetailSchema, ExperimentQuerySchema, ExperimentSchema,
)
from .schemas.results import ComparisonSchema
from .submission import create_and_queue

blp = Blueprint("experiments", __name__, description="Experiments: one scenario, one run per policy.")
DETAIL, COMPARISON = ExperimentDetailSchema(), ComparisonSchema()

DOCUMENT_BODY = {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ExperimentDocument"}}}}


class IdempotencyHeadersSchema(Schema):
    class Meta:
        unknown = EXCLUDE       # every other header

    idempotency_key = fields.String(data_key="Idempotency-Key", validate=validate.Length(min=1, max=200),
                                    metadata={"description": "the same key and body give the same experiment "
                                                             "(200); the same key with another body, 409"})


def _loaded():
    return (selectinload(Experiment.runs), selectinload(Experiment.traces), selectinload(Experiment.templates))


def _location(experiment: Experiment) -> dict[str, str]:
    return {"Location": url_for(".ExperimentItem", experiment_id=experiment.id)}


@blp.route("")
class Experiments(MethodView):
    @blp.arguments(ExperimentQuerySchema, location="query")
    @blp.response(200, ExperimentSchema(many=True))
    @blp.paginate(SQLPage)
    @blp.doc(summary="List experiments", description="Newest first, with their runs' status and progress.")
    def get(self, args: dict) -> Listing:
        statement = select(Experiment).options(*_loaded()).order_by(Experiment.id.desc())
        if "name" in args:
            statement = statement.where(Experiment.name == args["name"])
        if "host_id" in args:
            statement = statement.where(Experiment.host_id == args["host_id"])
        if "created_after" in args:
            statement = statement.where(Experiment.created_at >= args["created_after"])
        if "created_before" in args:
            statement = statement.where(Experiment.created_at < args["created_before"])
        return Listing(statement)

    @blp.arguments(IdempotencyHeadersSchema, location="headers")
    @blp.response(201, ExperimentDetailSchema)
    @blp.alt_response(200, schema=ExperimentDetailSchema, success=True,
                      description="replayed: this Idempotency-Key was used for the same body before")
    @documented_errors(blp, 400, 409, 415, 503)
    @blp.doc(summary="Create an experiment and queue one run per policy", requestBody=DOCUMENT_BODY,
             description="The body is the scenario format of `vmemlab simulate` plus `policies`; a scenario "
                         "file can be posted as it is. Errors name each field by its path in the document.")
    def post(self, headers: dict):
        key = headers.get("idempotency_key")
        experiment = create_and_queue(
            "experiment", lambda session, body: create_experiment(session, body, idempotency_key=key,
                                                                  settings=settings()),
            lambda experiment: [run.id for run in experiment.runs], delete_experiment, enqueue)
        return experiment, 201 if experiment.created else 200, _location(experiment)


@blp.route("/<int:experiment_id>")
class ExperimentItem(MethodView):
    @blp.etag
    @blp.response(200, ExperimentDetailSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Get an experiment with its scenario and its runs",
             description="Once all its runs have finished it never changes: send its ETag back (If-None-Match) "
                         "for a 304.")
    @retrying_reads
    def get(self, experiment_id: int):
        version = finished_experiment_version(experiment_id)
        if version is None:
            return load_experiment(experiment_id, read_db())
        set_version_etag(blp, "experiment", version[0])
        keep_answer(("experiment", experiment_id))
        # its links are paths under the application's root
        return cached(("experiment", request.script_root, version[0]),
                      lambda: DETAIL.dump(load_experiment(experiment_id, read_db())))

    @blp.response(204)
    @documented_errors(blp, 404, 409)
    @blp.doc(summary="Delete an experiment and its runs",
             description="Runs still queued or running are cancelled; the traces and templates it used are "
                         "released. A point of a sweep or a probe of a capacity search goes with its sweep or "
                         "search (409 here).")
    def delete(self, experiment_id: int) -> None:
        experiment = load_experiment(experiment_id)
        session = db()
        part_of = study_of(session, experiment_id)
        if part_of is not None:
            abort(409, message=f"experiment {experiment_id} is part of {part_of}: delete that instead")
        for run in experiment.runs:
            if not run.finished:
                request_cancel(session, run.id)
        delete_experiment(session, experiment)
        session.commit()


@blp.route("/<int:experiment_id>/comparison")
class ExperimentComparison(MethodView):
    @blp.etag
    @blp.arguments(ExperimentComparisonQuerySchema, location="query")
    @blp.response(200, ComparisonSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Every run of the experiment side by side, with deltas against a baseline policy",
             description="Once all its runs have finished it never changes: send its ETag back (If-None-Match) "
                         "for a 304.")
    @retrying_reads
    def get(self, args: dict, experiment_id: int):
        baseline = args.get("baseline", DEFAULT_POLICY)
        version = finished_experiment_version(experiment_id)
        if version is not None and ("baseline" not in args or baseline in version[1]):
            set_version_etag(blp, "comparison", version[0], baseline)
            keep_answer(("experiment", experiment_id))
            return cached(("comparison", version[0], baseline),
                          lambda: COMPARISON.dump(compare(experiment_runs(experiment_id), baseline_policy=baseline)))
        experiment = load_experiment(experiment_id, read_db())
        policies = [run.policy_name for run in experiment.runs]
        if "baseline" in args and baseline not in policies:
            invalid("query", {"baseline": [f"the experiment has no run of policy {baseline!r}; its policies: "
                                           f"{', '.join(policies)}"]})
        return compare(experiment.runs, baseline_policy=baseline)


def study_of(session, experiment_id: int):
    """``sweep 3`` or ``capacity search 2`` if the experiment is one of its points or probes."""
    sweep = session.scalar(select(SweepPoint.sweep_id).where(SweepPoint.experiment_id == experiment_id))
    if sweep is not None:
        return f"sweep {sweep}"
    search = session.scalar(select(CapacityProbe.search_id).where(CapacityProbe.experiment_id == experiment_id))
    return None if search is None else f"capacity search {search}"


def load_experiment(experiment_id: int, session=None) -> Experiment:
    experiment = (session or db()).scalar(select(Experiment).options(*_loaded()).where(Experiment.id == experiment_id))
    if experiment is None:
        abort(404, message=f"no experiment with id {experiment_id}")
    return experiment


def experiment_runs(experiment_id: int) -> list[Run]:
    """An experiment's runs in order (as ``Experiment.runs``), without the experiment; 404 if none."""
    runs = list(read_db().scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.id)))
    if not runs:
        abort(404, message=f"no experiment with id {experiment_id}")
    return runs
