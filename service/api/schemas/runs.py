"""Runs: one simulation of an experiment under one policy, and their history."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from ...models import RunStatus
from ..common import MAX_ID, QuerySchema, id_field
from .experiments import aware_datetime
from .results import AsStored, MetricsSchema, RunSummarySchema

SORT_KEYS = ("slowdown", "fairness", "peak_used_mb", "host_swap_peak_mb", "overcommit_ratio", "mean_used_mb",
             "sharing_saved_mb_mean", "created_at", "finished_at", "id")
SORTS = SORT_KEYS + tuple(f"-{key}" for key in SORT_KEYS)
# names of the sort values in generated clients (openapi-python-client reads x-enum-varnames):
# SLOWDOWN, SLOWDOWN_DESC rather than VALUE_10
SORT_NAMES = tuple(key.upper() for key in SORT_KEYS) + tuple(f"{key.upper()}_DESC" for key in SORT_KEYS)


class RunSchema(Schema):
    id = fields.Integer()
    experiment_id = fields.Integer()
    host_id = fields.Integer(allow_none=True)
    status = fields.String()
    progress = fields.Float()
    policy_name = fields.String()
    policy_version = fields.String()
    plugin_distribution = fields.String()
    engine_version = fields.String()
    params = fields.Dict()
    seed = fields.Integer()
    fingerprint = fields.String()
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    heartbeat_at = fields.DateTime(allow_none=True)
    wall_s = fields.Float(allow_none=True)
    worker = fields.String(allow_none=True)
    attempts = fields.Integer()
    cancel_requested = fields.Boolean()
    error = fields.String(allow_none=True)
    metrics = fields.Nested(MetricsSchema, metadata={"description": "summary metrics, each null until the run "
                                                                     "succeeded"})


class RunDetailSchema(RunSchema):
    summary = AsStored(RunSummarySchema, allow_none=True, metadata={
        "description": "the engine's summary: per VM and for the host; null until the run finished"})


class RunQuerySchema(QuerySchema):
    policy = fields.String()
    plugin_version = fields.String()
    engine_version = fields.String()
    host_id = id_field()
    experiment_id = id_field()
    fingerprint = fields.String(validate=validate.Length(equal=64))
    seed = fields.Integer(validate=validate.Range(0, 2**63 - 1))
    status = fields.String(validate=validate.OneOf([s.value for s in RunStatus]))
    created_after = aware_datetime()
    created_before = aware_datetime()
    sort = fields.String(load_default="-created_at", validate=validate.OneOf(SORTS),
                         metadata={"description": "a metric or time, '-' first for descending; runs without "
                                                  "the metric come last", "x-enum-varnames": list(SORT_NAMES)})


def json_only_format() -> fields.String:
    # format=csv still answers CSV for the clients written before the .csv paths, but is not
    # documented: a generated client would parse that CSV as JSON
    return fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]), metadata={
        "enum": ["json"], "description": "json; for CSV use the .csv path"})


class SeriesQuerySchema(QuerySchema):
    format = json_only_format()


class SeriesSchema(Schema):
    run_id = fields.Integer()
    epochs = fields.Integer()
    series = fields.Dict(metadata={"description": "time_s, host fields, host_state, per VM fields, per VM "
                                                  "figures the policy reported"})
    events = fields.List(fields.Dict())


class RunIds(fields.List):
    """Run ids as clients send a list, ``runs=1&runs=2&runs=7`` (OpenAPI's form style, exploded),
    or comma separated, ``runs=1,2,7``, or both at once: every id given is kept, in order."""

    is_multiple = True      # webargs: every value of a repeated query parameter, not the first

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[int]:
        values = value if isinstance(value, (list, tuple)) else [value]
        parts = [part for item in values for part in (item.split(",") if isinstance(item, str) else [item])]
        return super()._deserialize(parts, attr, data, **kwargs)


class ComparisonsQuerySchema(QuerySchema):
    runs = RunIds(fields.Integer(validate=validate.Range(min=1, max=MAX_ID)), required=True,
                  validate=validate.Length(min=1, max=100),
                  metadata={"description": "run ids: runs=1&runs=5&runs=9, or comma separated, runs=1,5,9"})
    baseline_run = id_field(metadata={"description": "one of the runs; default: the first static run"})
    baseline = fields.String(metadata={"description": "baseline policy when baseline_run is not given"})
