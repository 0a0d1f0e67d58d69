"""What a run produced, as typed schemas: its metric columns, its engine summary and comparisons
of runs, so that the OpenAPI document (and a client generated from it) gives fields, not maps.

The metrics and comparisons are dumped through these schemas: their keys are fixed by
service.models.METRIC_COLUMNS and service.runs.compare. A summary is stored as the engine wrote
it (older runs lack newer fields, a failed run's may be empty): it is returned as stored and only
documented here, every field optional and nullable, other fields allowed.
"""
from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, fields

from ...models import METRIC_COLUMNS

NULLABLE = {"allow_none": True}
# the engine writes NaN and infinities as null (service.tasks); a run may lack any figure
MB = {"allow_none": True, "metadata": {"description": "MB"}}


class MetricsSchema(Schema):
    """A run's summary metric columns: every key always present, null until the run succeeded
    (or when the figure is not a finite number)."""

    slowdown = fields.Float(allow_none=True, metadata={"description": "mean slowdown of the VMs that ran"})
    fairness = fields.Float(allow_none=True, metadata={"description": "Jain's index of the VMs' slowdowns"})
    peak_used_mb = fields.Float(**MB)
    mean_used_mb = fields.Float(**MB)
    host_swap_peak_mb = fields.Float(**MB)
    smart_paging_peak_mb = fields.Float(**MB)
    sharing_saved_mb_mean = fields.Float(**MB)
    overcommit_ratio = fields.Float(**NULLABLE)
    vms_refused = fields.Integer(**NULLABLE)
    vms_blocked = fields.Integer(**NULLABLE)


class MetricChangesSchema(Schema):
    """Per metric, a run's figure against the baseline's (difference or ratio); null where either
    is missing or, for a ratio, the baseline's is zero."""

    slowdown = fields.Float(**NULLABLE)
    fairness = fields.Float(**NULLABLE)
    peak_used_mb = fields.Float(**NULLABLE)
    mean_used_mb = fields.Float(**NULLABLE)
    host_swap_peak_mb = fields.Float(**NULLABLE)
    smart_paging_peak_mb = fields.Float(**NULLABLE)
    sharing_saved_mb_mean = fields.Float(**NULLABLE)
    overcommit_ratio = fields.Float(**NULLABLE)
    vms_refused = fields.Float(**NULLABLE)
    vms_blocked = fields.Float(**NULLABLE)


assert set(MetricsSchema._declared_fields) == set(METRIC_COLUMNS) == set(MetricChangesSchema._declared_fields), \
    "the metric schemas must name every metric column"


# --- the engine's summary (documented only) ----------------------------------------------------

class _Open(Schema):
    class Meta:
        unknown = INCLUDE       # documented with additionalProperties: a newer engine may add fields


class VmSummarySchema(_Open):
    name = fields.String()
    state = fields.String(metadata={"description": "ran, refused, blocked or oom"})
    slowdown = fields.Float(allow_none=True, metadata={"description": "null when the VM never computed"})
    refs_done = fields.Integer(**NULLABLE)
    faults = fields.Dict(keys=fields.String(), values=fields.Integer(allow_none=True),
                         metadata={"description": "fault counts by kind"})
    peak_resident_mb = fields.Float(**MB)
    peak_assigned_mb = fields.Float(**MB)
    host_swapped_peak_mb = fields.Float(**MB)
    ballooned_peak_mb = fields.Float(**MB)
    guest_paged_peak_mb = fields.Float(**MB)
    shared_peak_mb = fields.Float(**MB)
    compressed_peak_mb = fields.Float(**MB)
    smart_paged_peak_mb = fields.Float(**MB)
    stall_s = fields.Float(**NULLABLE)
    blocked_s = fields.Float(**NULLABLE)
    memory_wait_s = fields.Float(**NULLABLE)
    running_s = fields.Float(**NULLABLE)
    guaranteed_mb = fields.Float(**MB)
    allocated_end_mb = fields.Float(**MB)
    allocated_last_minute_mb = fields.Float(**MB)
    refused_reason = fields.String(allow_none=True, metadata={"description": "only for a refused VM"})


class HostSummarySchema(_Open):
    memory_mb = fields.Float(**MB)
    peak_used_mb = fields.Float(**MB)
    mean_used_mb = fields.Float(**MB)
    sharing_saved_mb_mean = fields.Float(**MB)
    sharing_saved_mb_peak = fields.Float(**MB)
    host_swap_peak_mb = fields.Float(**MB)
    smart_paging_peak_mb = fields.Float(**MB)
    compression_cache_peak_mb = fields.Float(**MB)
    overcommit_ratio = fields.Float(**NULLABLE)
    sharing_saved_zero_mb_mean = fields.Float(**MB)
    sharing_saved_zero_mb_peak = fields.Float(**MB)
    sharing_saved_other_mb_mean = fields.Float(**MB)
    states_pct = fields.Dict(keys=fields.String(), values=fields.Float(allow_none=True), metadata={
        "description": "share of the time in each state the policy reported (ESX: high, soft, hard, low)"})


class RunSummarySchema(_Open):
    """The engine's summary of a run, as stored when the run finished."""

    scenario = fields.String(allow_none=True, metadata={"description": "the scenario's name"})
    policy = fields.String(**NULLABLE)
    policy_version = fields.String(**NULLABLE)
    engine_version = fields.String(**NULLABLE)
    seed = fields.Integer(**NULLABLE)
    duration_s = fields.Float(**NULLABLE)
    slowdown = fields.Float(**NULLABLE)
    fairness = fields.Float(**NULLABLE)
    vms = fields.List(fields.Nested(VmSummarySchema))
    faults = fields.Dict(keys=fields.String(), values=fields.Integer(allow_none=True),
                         metadata={"description": "fault counts by kind, all VMs"})
    host = fields.Nested(HostSummarySchema)
    notes = fields.List(fields.String(), metadata={"description": "what a reader of the run should know happened"})
    vms_refused = fields.Integer(**NULLABLE)
    vms_blocked = fields.Integer(**NULLABLE)


# --- comparisons (dumped through these) ------------------------------------------------------

class ComparedVmSchema(Schema):
    slowdown = fields.Float(**NULLABLE)
    state = fields.String(**NULLABLE)
    slowdown_delta = fields.Float(allow_none=True, metadata={"description": "minus the same VM's in the baseline"})
    slowdown_ratio = fields.Float(allow_none=True, metadata={"description": "over the same VM's in the baseline"})


class ComparedRunSchema(Schema):
    run_id = fields.Integer()
    experiment_id = fields.Integer()
    policy = fields.String()
    policy_version = fields.String()
    engine_version = fields.String()
    params = fields.Dict(keys=fields.String())
    seed = fields.Integer()
    fingerprint = fields.String()
    status = fields.String()
    is_baseline = fields.Boolean()
    metrics = fields.Nested(MetricsSchema)
    deltas = fields.Nested(MetricChangesSchema, allow_none=True,
                           metadata={"description": "run minus baseline, per metric; each null without a succeeded baseline"})
    ratios = fields.Nested(MetricChangesSchema, allow_none=True,
                           metadata={"description": "run over baseline, per metric; each null without a succeeded baseline"})
    vms = fields.Dict(keys=fields.String(), values=fields.Nested(ComparedVmSchema),
                      metadata={"description": "per VM name (a succeeded run's VMs)"})


class ComparisonBaselineSchema(Schema):
    run_id = fields.Integer()
    policy = fields.String()
    status = fields.String()


class ComparisonSchema(Schema):
    baseline = fields.Nested(ComparisonBaselineSchema, allow_none=True,
                             metadata={"description": "the run compared against; null if none"})
    metrics = fields.List(fields.String(), metadata={"description": "the metric columns, in order"})
    same_configuration = fields.Boolean(metadata={"description": "whether all had the same fingerprint and "
                                                                 "engine version"})
    runs = fields.List(fields.Nested(ComparedRunSchema), metadata={"description": "in the order asked"})


class AsStored(fields.Nested):
    """A value returned as stored, documented by a schema (its component in the document): the
    schema is not applied, so that nothing stored is dropped or changed on the way out."""

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return value
