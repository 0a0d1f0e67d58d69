"""``/api/v1/capacity-searches``: how many copies of one VM the host runs under each policy within
an SLA. Each probe is an experiment with one run; the workers add the next probe when one ends
(service.capacity_searches), so the probes of different policies run side by side."""
from __future__ import annotations

from flask import url_for
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from ..capacity_searches import (
    cancel_search, create_search, delete_search, history, lock_search, search_results, with_probes,
)
from ..models import CapacitySearch
from ..runs import enqueue_group
from .common import Blueprint, Listing, SQLPage, db, documented_errors, settings
from .experiments import IdempotencyHeadersSchema
from .schemas.studies import CapacityHistorySchema, CapacitySearchSchema, StudyQuerySchema, search_view
from .submission import create_and_queue

blp = Blueprint("capacity_searches", __name__,
                description="Capacity searches: how many copies of a VM fit, per policy, within an SLA.")
SEARCH_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["scenario", "vm", "sla"], "properties": {
        "name": {"type": "string", "maxLength": 200},
        "scenario": {"$ref": "#/components/schemas/ExperimentDocument"},
        "vm": {"type": "string", "description": "the VM to copy (or the entry with count that made its copies)"},
        "sla": {"type": "object", "required": ["max_slowdown"], "properties": {
            "max_slowdown": {"type": "number", "minimum": 1}, "min_fairness": {"type": "number"},
            "max_blocked_fraction": {"type": "number", "default": 0.05}}},
        "policies": {"type": "array", "items": {"$ref": "#/components/schemas/PolicyChoiceDoc"}},
        "max_count": {"type": "integer", "minimum": 1, "default": 64}},
    "example": {"scenario": {"duration_s": 60, "host": {"memory_mb": 6144},
                             "vms": [{"name": "web", "memory_mb": 2048}]},
                "vm": "web", "sla": {"max_slowdown": 1.5}, "max_count": 16,
                "policies": [{"name": "static"}, {"name": "esx"}, {"name": "dynamic-memory"}]}}}}}


def load_search(search_id: int) -> CapacitySearch:
    search = db().scalar(select(CapacitySearch).options(*with_probes()).where(CapacitySearch.id == search_id))
    if search is None:
        abort(404, message=f"no capacity search with id {search_id}")
    return search


@blp.route("")
class Searches(MethodView):
    @blp.arguments(StudyQuerySchema, location="query")
    @blp.response(200, CapacitySearchSchema(many=True))
    @blp.paginate(SQLPage)
    @blp.doc(summary="List capacity searches", description="Newest first, each with its one-line answer.")
    def get(self, args: dict) -> Listing:
        statement = select(CapacitySearch).options(*with_probes()).order_by(CapacitySearch.id.desc())
        if "name" in args:
            statement = statement.where(CapacitySearch.name == args["name"])
        if "scenario_sha256" in args:
            statement = statement.where(CapacitySearch.scenario_sha256 == args["scenario_sha256"])
        return Listing(statement)

    @blp.arguments(IdempotencyHeadersSchema, location="headers")
    @blp.response(202, CapacitySearchSchema)
    @blp.alt_response(200, schema=CapacitySearchSchema, success=True,
                      description="replayed: this Idempotency-Key was used for the same body before")
    @documented_errors(blp, 400, 409, 415, 503)
    @blp.doc(summary="Start a capacity search", requestBody=SEARCH_BODY,
             description="For each policy, the most copies of `vm` (added in its place; the scenario's other VMs "
                         "stay) with every VM admitted, none blocked past `sla.max_blocked_fraction` (0.05) of its "
                         "time and every slowdown at most `sla.max_slowdown` (and fairness at least "
                         "`sla.min_fairness`). Doubling, then bisection; each probe is a stored run.")
    def post(self, headers: dict):
        search = create_and_queue(
            "capacity search", lambda session, body: create_search(session, body, headers.get("idempotency_key"),
                                                                   settings=settings()),
            lambda search: [run.id for probe in search.probes for run in probe.experiment.runs], delete_search,
            enqueue_group)
        location = {"Location": url_for(".SearchItem", search_id=search.id)}
        return search_view(load_search(search.id)), 202 if search.created else 200, location


@blp.route("/<int:search_id>")
class SearchItem(MethodView):
    @blp.response(200, CapacitySearchSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Get a capacity search: its answer, per policy the capacity and its probes (as runs)")
    def get(self, search_id: int) -> dict:
        return search_view(load_search(search_id))

    @blp.response(204)
    @documented_errors(blp, 404)
    @blp.doc(summary="Delete a capacity search with its probes' experiments and runs")
    def delete(self, search_id: int) -> None:
        load_search(search_id)
        session = db()
        search = lock_search(session, search_id)
        cancel_search(session, search)
        delete_search(session, search)
        session.commit()


@blp.route("/<int:search_id>/cancel")
class SearchCancel(MethodView):
    @blp.response(202, CapacitySearchSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Cancel the probes still queued or running; the search ends as cancelled")
    def post(self, search_id: int) -> dict:
        load_search(search_id)
        session = db()
        cancel_search(session, lock_search(session, search_id))
        session.commit()
        session.expire_all()
        return search_view(load_search(search_id))


@blp.route("/<int:search_id>/history")
class SearchHistory(MethodView):
    @blp.response(200, CapacityHistorySchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Other searches of the same scenario and VM, with each policy's count against this one's",
             description="To see what a newer plugin version or a changed parameter or SLA did to the capacity.")
    def get(self, search_id: int) -> dict:
        search = load_search(search_id)
        return {"search_id": search.id, "others": compare_history(search, history(db(), search))}


def compare_history(search: CapacitySearch, others: list[CapacitySearch]) -> list[dict]:
    mine = {r["policy"]: r for r in search_results(search)}
    rows = []
    for other in others:
        policies = []
        for result in search_results(other):
            here = mine.get(result["policy"], {})
            delta = (here.get("count") - result["count"]
                     if here.get("count") is not None and result.get("count") is not None else None)
            policies.append({key: result.get(key) for key in ("policy", "policy_version", "params", "status",
                                                              "count", "limited_by", "worst_slowdown")}
                            | {"this_count": here.get("count"), "this_version": here.get("policy_version"),
                               "this_params": here.get("params"), "count_delta": delta})
        rows.append({"id": other.id, "name": other.name, "created_at": other.created_at.isoformat(),
                     "sla": other.sla, "max_count": other.max_count, "policies": policies,
                     "links": {"self": url_for("capacity_searches.SearchItem", search_id=other.id),
                               "report": url_for("report.capacity_report", search_id=other.id)}})
    return rows
