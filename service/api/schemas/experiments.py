"""Experiments: the scenario format plus the policies to compare; one run per policy."""
from __future__ import annotations

import datetime as dt

from flask import url_for
from marshmallow import Schema, fields, validate

from ...models import Experiment, RunStatus
from ...scenario import PhaseSchema, PolicyEventSchema, ScenarioSchema, VMSchema, WorkloadSchema
from ...scenario_fields import MAX_MB
from ..common import QuerySchema, id_field
from .results import AsStored

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
    params = fields.Dict(keys=fields.String(), metadata={"description": "the policy's parameters (GET /plugins)"})


# The experiment document's VM entries as documented: the scenario format's VM, with references
# to stored templates and traces. For the OpenAPI document only (see ExperimentDocumentSchema).

class PhaseEntrySchema(PhaseSchema):
    trace_id = fields.Integer(metadata={"description": "an uploaded trace (kind trace), instead of trace"})


class WorkloadEntrySchema(WorkloadSchema):
    phases = fields.List(fields.Nested(PhaseEntrySchema), required=True)


class VMEntrySchema(VMSchema):
    """A VM of the scenario format, or ``template_id`` and what to change of that template (the
    name then is still required; memory_mb and the rest default to the template's)."""

    template_id = fields.Integer(metadata={"description": "a stored VM template the entry starts from"})
    memory_mb = fields.Integer(validate=validate.Range(1, MAX_MB),
                               metadata={"description": "required unless template_id is given"})
    workload = fields.Nested(WorkloadEntrySchema)


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
    vms = fields.List(fields.Nested(VMEntrySchema), required=True, metadata={
        "description": "inline VMs (scenario format); {\"template_id\": 5, \"name\": \"web1\", ...} starts from a "
                       "stored template; a trace phase may name an uploaded trace by \"trace_id\""})
    policies = fields.List(fields.Nested(PolicyChoiceDocSchema), metadata={"description": "default: static"})
    policy_events = fields.List(fields.Nested(PolicyEventSchema), metadata={
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
    scenario = AsStored(ScenarioSchema, metadata={"description": "the validated scenario, every default written out, "
                                                                 "templates and stored traces resolved"})


class ExperimentQuerySchema(QuerySchema):
    name = fields.String()
    host_id = id_field()
    created_after = aware_datetime()
    created_before = aware_datetime()


class ExperimentComparisonQuerySchema(QuerySchema):
    baseline = fields.String(validate=validate.Length(min=1, max=100),
                             metadata={"description": "policy to compare against; default static, if it ran"})
