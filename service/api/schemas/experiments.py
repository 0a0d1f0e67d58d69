"""Experiments: the scenario format plus the policies to compare; one run per policy."""
from __future__ import annotations

import datetime as dt

from flask import url_for
from marshmallow import Schema, fields, validate

from ...models import Experiment, RunStatus
from ..common import QuerySchema, id_field

UTC_TIME = {"metadata": {"description": "ISO 8601 time; without a zone it is read as UTC"}}


class UtcDateTime(fields.AwareDateTime):
    """An aware time, turned to UTC here: a time at the edge of the calendar whose zone moves it
    past year 1 or 9999 is refused (422) rather than overflowing in the query (500)."""

    def _deserialize(self, value, attr, data, **kwargs) -> dt.datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(dt.timezone.utc)
        except OverflowError:
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None


def aware_datetime() -> fields.AwareDateTime:
    return UtcDateTime(default_timezone=dt.timezone.utc, **UTC_TIME)


class PolicyChoiceDocSchema(Schema):
    name = fields.String(required=True)
    params = fields.Dict()


class ExperimentDocumentSchema(Schema):
    """For the OpenAPI document only: the body is validated by service.experiments, which reports
    every problem by its path in the document (``vms[1].workload.phases[0].footprint_mb``)."""

    name = fields.String()
    description = fields.String()
    duration_s = fields.Float(required=True)
    seed = fields.Integer()
    epoch_s = fields.Float()
    slice_ms = fields.Float()
    host = fields.Dict(metadata={"description": "an inline host (scenario format), or give host_id",
                                 "allOf": [{"$ref": "#/components/schemas/HostSpec"}]})
    host_id = fields.Integer(metadata={"description": "a stored host"})
    vms = fields.List(fields.Dict(), required=True, metadata={
        "description": "inline VMs (scenario format); {\"template_id\": 5, \"name\": \"web1\", ...} starts from a "
                       "stored template; a trace phase may name an uploaded trace by \"trace_id\""})
    policies = fields.List(fields.Nested(PolicyChoiceDocSchema), metadata={"description": "default: static"})
    policy_events = fields.List(fields.Dict(), metadata={
        "description": "parameter changes during the run: {\"at_s\": 300, \"policy\": \"esx\", \"params\": "
                       "{\"idle_tax_pct\": 90}}; each applies to the runs of its policy from that epoch on, "
                       "and is checked against the policy's parameters (422 naming policy_events[i])"})


class RunBriefSchema(Schema):
    id = fields.Integer()
    policy_name = fields.String()
    policy_version = fields.String()
    status = fields.String()
    progress = fields.Float()
    slowdown = fields.Float(allow_none=True)
    error = fields.String(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


def overall_status(experiment: Experiment) -> str:
    """queued, running, succeeded, failed or cancelled: one word for all the runs."""
    statuses = {run.status for run in experiment.runs}
    unfinished = statuses & {RunStatus.QUEUED.value, RunStatus.RUNNING.value}
    if unfinished:
        return RunStatus.QUEUED.value if statuses == {RunStatus.QUEUED.value} else RunStatus.RUNNING.value
    for status in (RunStatus.FAILED.value, RunStatus.CANCELLED.value):
        if status in statuses:
            return status
    return RunStatus.SUCCEEDED.value


class ExperimentSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    description = fields.String()
    seed = fields.Integer()
    duration_s = fields.Float()
    host_id = fields.Integer(allow_none=True)
    policies = fields.List(fields.Dict())
    idempotency_key = fields.String(allow_none=True)
    created_at = fields.DateTime()
    status = fields.Function(overall_status, metadata={"description": "queued, running, succeeded, failed or "
                                                                      "cancelled, over all its runs"})
    progress = fields.Method("_progress")
    trace_ids = fields.Function(lambda e: [t.id for t in e.traces])
    template_ids = fields.Function(lambda e: [t.id for t in e.templates])
    runs = fields.List(fields.Nested(RunBriefSchema))
    links = fields.Method("_links", metadata={"description": "this experiment, its comparison and its report page"})

    def _links(self, experiment: Experiment) -> dict[str, str]:
        ids = {"experiment_id": experiment.id}
        return {"self": url_for("experiments.ExperimentItem", **ids),
                "comparison": url_for("experiments.ExperimentComparison", **ids),
                "report": url_for("report.experiment_report", **ids)}

    def _progress(self, experiment: Experiment) -> float:
        runs = experiment.runs
        return sum(r.progress for r in runs) / len(runs) if runs else 0.0


class ExperimentDetailSchema(ExperimentSchema):
    scenario = fields.Dict(metadata={"description": "the validated scenario, every default written out"})


class ExperimentQuerySchema(QuerySchema):
    name = fields.String()
    host_id = id_field()
    created_after = aware_datetime()
    created_before = aware_datetime()


class ComparisonSchema(Schema):
    baseline = fields.Dict(allow_none=True)
    metrics = fields.List(fields.String())
    same_configuration = fields.Boolean()
    runs = fields.List(fields.Dict(), metadata={"description": "per run: identity, metrics, deltas and ratios "
                                                               "against the baseline, and per VM slowdowns"})


class ExperimentComparisonQuerySchema(QuerySchema):
    baseline = fields.String(validate=validate.Length(min=1, max=100),
                             metadata={"description": "policy to compare against; default static, if it ran"})
