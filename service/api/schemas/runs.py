"""Runs: one simulation of an experiment under one policy, and their history."""
from __future__ import annotations

from marshmallow import Schema, fields, validate
from webargs.fields import DelimitedList

from ...models import METRIC_COLUMNS, RunStatus
from ..common import MAX_ID, QuerySchema, id_field
from .experiments import aware_datetime

SORT_KEYS = ("slowdown", "fairness", "peak_used_mb", "host_swap_peak_mb", "overcommit_ratio", "mean_used_mb",
             "sharing_saved_mb_mean", "created_at", "finished_at", "id")
SORTS = SORT_KEYS + tuple(f"-{key}" for key in SORT_KEYS)


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
    metrics = fields.Dict(metadata={"description": f"summary metrics: {', '.join(METRIC_COLUMNS)}"})


class RunDetailSchema(RunSchema):
    summary = fields.Dict(allow_none=True)


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
                                                  "the metric come last"})


class SeriesQuerySchema(QuerySchema):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))


class SeriesSchema(Schema):
    run_id = fields.Integer()
    epochs = fields.Integer()
    series = fields.Dict(metadata={"description": "time_s, host fields, host_state, per VM fields, per VM "
                                                  "figures the policy reported"})
    events = fields.List(fields.Dict())


class ComparisonsQuerySchema(QuerySchema):
    runs = DelimitedList(fields.Integer(validate=validate.Range(min=1, max=MAX_ID)), required=True,
                         validate=validate.Length(min=1, max=100),
                         metadata={"description": "run ids, comma separated"})
    baseline_run = id_field(metadata={"description": "one of the runs; default: the first static run"})
    baseline = fields.String(metadata={"description": "baseline policy when baseline_run is not given"})
