"""Sweeps and capacity searches: studies made of many runs."""
from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import Schema, fields, pre_dump, validate

from ...capacity_searches import search_answer, search_results, search_status
from ...models import CapacitySearch, Sweep
from ...sweeps import answer, progress, results
from ..common import QuerySchema
from .runs import json_only_format

ONE_LINE = {"description": "the answer in words and figures"}


class StudyQuerySchema(QuerySchema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    scenario_sha256 = fields.String(validate=validate.Length(equal=64), metadata={
        "description": "only studies of this scenario (the scenario_sha256 of another)"})


class SweepSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    created_at = fields.DateTime()
    axes = fields.List(fields.Dict(), metadata={"description": "[{path, values}], ranges written out"})
    policies = fields.List(fields.Dict())
    points = fields.Integer(metadata={"description": "how many points (each one experiment)"})
    scenario_sha256 = fields.String()
    idempotency_key = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "queued, running, succeeded, failed or cancelled"})
    progress = fields.Float()
    runs_total = fields.Integer()
    runs_by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    answer = fields.String(metadata=ONE_LINE)
    links = fields.Dict(keys=fields.String(), values=fields.String())

    @pre_dump
    def _view(self, sweep: Any, **_: Any) -> Any:
        return sweep_view(sweep) if isinstance(sweep, Sweep) else sweep


def sweep_view(sweep: Sweep, detail: bool = False) -> dict[str, Any]:
    """What the API says of a sweep: its request, progress, one-line answer and links; with
    ``detail``, the results table so far."""
    ids = {"sweep_id": sweep.id}
    rows = results(sweep)
    out = {"id": sweep.id, "name": sweep.name, "created_at": sweep.created_at, "axes": sweep.axes,
           "policies": sweep.policies, "points": len(sweep.points), "scenario_sha256": sweep.scenario_sha256,
           "idempotency_key": sweep.idempotency_key, **progress(sweep), "answer": answer(sweep, rows),
           "links": {"self": url_for("sweeps.SweepItem", **ids), "results": url_for("sweeps.SweepResults", **ids),
                     "csv": url_for("sweeps.SweepResultsCsv", **ids),
                     "cancel": url_for("sweeps.SweepCancel", **ids), "report": url_for("report.sweep_report", **ids)}}
    if detail:
        out["results"] = rows
    return out


class SweepDetailSchema(SweepSchema):
    results = fields.List(fields.Dict(), metadata={
        "description": "per point and policy: point (axis path -> value), policy, policy_version, params, run_id, "
                       "experiment_id, status, error, metrics (None until the run succeeded)"})


class SweepResultsSchema(Schema):
    results = fields.List(fields.Dict(), metadata={"description": "as in the sweep: one row per point and policy"})


class SweepResultsQuerySchema(QuerySchema):
    format = json_only_format()


class CapacitySearchSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    vm = fields.String(attribute="vm_name")
    sla = fields.Dict()
    max_count = fields.Integer()
    policies = fields.List(fields.Dict())
    scenario_sha256 = fields.String()
    idempotency_key = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "running, succeeded, failed or cancelled"})
    answer = fields.String(metadata=ONE_LINE)
    error = fields.String(allow_none=True)
    results = fields.List(fields.Dict(), metadata={
        "description": "per policy: policy, policy_version, params, status, count (copies that fit), limited_by "
                       "(refused, blocked, sla or bound), worst_slowdown at count, non_monotone, error, and the "
                       "probes (count, ok, worst_slowdown, reason, detail, run)"})
    links = fields.Dict(keys=fields.String(), values=fields.String())

    @pre_dump
    def _view(self, search: Any, **_: Any) -> Any:
        return search_view(search) if isinstance(search, CapacitySearch) else search


def search_view(search: CapacitySearch) -> dict[str, Any]:
    ids = {"search_id": search.id}
    found = search_results(search)
    return {"id": search.id, "name": search.name, "created_at": search.created_at, "finished_at": search.finished_at,
            "vm": search.vm_name, "sla": search.sla, "max_count": search.max_count, "policies": search.policies,
            "scenario_sha256": search.scenario_sha256, "idempotency_key": search.idempotency_key,
            "status": search_status(found), "error": search.error, "results": found,
            "answer": search_answer(search, found),
            "links": {"self": url_for("capacity_searches.SearchItem", **ids),
                      "history": url_for("capacity_searches.SearchHistory", **ids),
                      "cancel": url_for("capacity_searches.SearchCancel", **ids),
                      "report": url_for("report.capacity_report", **ids)}}


class CapacityHistorySchema(Schema):
    search_id = fields.Integer()
    others = fields.List(fields.Dict(), metadata={
        "description": "other searches of the same scenario and VM, newest first: id, created_at, sla, status, and "
                       "per policy its version, params, count and the difference from this search's count"})
