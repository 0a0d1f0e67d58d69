"""Scenario documents (JSON) to ``service.engine.config.Scenario`` and back.

The document mirrors the dataclasses field for field, with two differences a user sees:

- a VM's phases live under ``"workload": {"phases": [...], "repeat": false}``;
- a host device may be written as a preset name instead of an object:
  ``"devices": {"backup": "hdd", "fast": {"read_us": 15, "write_us": 15, "parallelism": 64}}``.
  Preset names (``hdd``, ``ssd``, ``nvme``) can be used anywhere a device name is expected
  without declaring them; declaring one under its own name overrides the preset's latencies.

A top-level ``"policies": [{"name": "esx", "params": {...}}]`` says which policies to compare;
it is returned beside the scenario, because a Scenario is the same whatever the policy.

Unknown fields are rejected and every number is range-checked; the limits are generous bounds
that catch typos (a memory size in KB, a fraction in percent), not a statement of what the
simulator can handle. A field left out takes the dataclass default, so defaults live in one
place (config.py). After the field checks, ``Scenario.check()`` applies the cross-field rules.
Every problem is reported as ``path: message`` with the path as written in the document, e.g.
``vms[1].workload.phases[0].footprint_mb: Must be greater than 0.``
"""
from __future__ import annotations

import dataclasses
import json
import re
from os import PathLike
from pathlib import Path
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from .engine.config import (
    DEVICE_PRESETS, EVENT_ACTIONS, PHASE_KINDS, REPLACEMENTS, VM, ContentMix, Costs, Device, Event,
    Host, Phase, PolicyEvent, Scenario, ScenarioError,
)
from .scenario_fields import (  # noqa: F401  (ROOT, MAX_MB and flatten_errors are part of this module's API)
    MAX_MB, ROOT, _Boolean, _device_name, _Float, _fraction, _Integer, _megabytes, _positive, flatten_errors,
)


MAX_SECONDS = 30 * 24 * 3600.0      # a month of simulated time
MAX_DEVICE_US = 10_000_000.0        # 10 s for one page I/O
MAX_COST_US = 1_000_000.0


class ScenarioValidationError(ValueError):
    """Every problem found in a scenario document: ``errors`` maps a field path to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{path}: {message}" for path, messages in self.errors.items() for message in messages]


# --- schemas, innermost first ---------------------------------------------------------------

class ContentMixSchema(Schema):
    zero = _fraction()
    shared = _fraction()
    compressible = _fraction()

    @validates_schema
    def _zero_and_shared_fit(self, data: dict, **kwargs: Any) -> None:
        defaults = self.default_mix()
        zero = data.get("zero", defaults.zero)
        shared = data.get("shared", defaults.shared)
        if zero + shared > 1.0:
            raise ValidationError(f"zero + shared must not exceed 1 (got {zero} + {shared})")

    def default_mix(self) -> ContentMix:
        return ContentMix()

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> ContentMix:
        return dataclasses.replace(self.default_mix(), **data)


class OsContentMixSchema(ContentMixSchema):
    """A VM's OS image content: fields left out take the VM's OS defaults, not a phase's."""

    def default_mix(self) -> ContentMix:
        return _dataclass_default(VM, "os_content")


class PhaseSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(PHASE_KINDS))
    duration_s = _Float(allow_none=True, validate=_positive(MAX_SECONDS))
    refs = _Integer(allow_none=True, validate=validate.Range(1, 2**53))
    footprint_mb = _Float(validate=validate.Range(0, MAX_MB))
    offset_mb = _Float(validate=validate.Range(0, MAX_MB))
    write_ratio = _fraction()
    compute_ns = _Float(validate=_positive(1e9))
    zipf_s = _Float(validate=_positive(10.0))
    hot_fraction = _Float(validate=_positive(1.0))
    hot_probability = _fraction()
    trace = fields.String(allow_none=True, validate=validate.Length(min=1))
    trace_loops = _Integer(validate=validate.Range(1, 1_000_000))
    free_on_end = _Boolean()
    content = fields.Nested(ContentMixSchema)

    @validates_schema
    def _trace_only_for_trace_phases(self, data: dict, **kwargs: Any) -> None:
        if data.get("trace") and data.get("kind") != "trace":
            raise ValidationError("only a phase of kind 'trace' reads a trace file", "trace")

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> Phase:
        return Phase(**data)


class WorkloadSchema(Schema):
    phases = fields.List(fields.Nested(PhaseSchema), required=True)
    repeat = _Boolean()


class EventSchema(Schema):
    at_s = _Float(required=True, validate=validate.Range(0, MAX_SECONDS))
    action = fields.String(required=True, validate=validate.OneOf(EVENT_ACTIONS))

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> Event:
        return Event(**data)


class VMSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    memory_mb = _megabytes(required=True)
    startup_mb = _megabytes(allow_none=True)
    minimum_mb = _megabytes(allow_none=True)
    maximum_mb = _megabytes(allow_none=True)
    buffer_pct = _Integer(validate=validate.Range(5, 2000))
    weight = _Integer(validate=validate.Range(0, 10000))
    reservation_mb = _megabytes(low=0)
    limit_mb = _megabytes(allow_none=True)
    shares = _Integer(allow_none=True, validate=validate.Range(0, 1_000_000))
    os_image = fields.String(validate=validate.Length(min=1, max=100))
    os_mb = _megabytes(low=0)
    os_image_mb = _megabytes(low=0)
    os_content = fields.Nested(OsContentMixSchema)
    replacement = fields.String(validate=validate.OneOf(REPLACEMENTS))
    pagefile_mb = _megabytes(allow_none=True)
    pagefile_device = _device_name()
    smart_paging_device = _device_name(allow_none=True)
    balloon_driver = _Boolean()
    workload = fields.Nested(WorkloadSchema)
    events = fields.List(fields.Nested(EventSchema))
    count = _Integer(validate=validate.Range(1, 100_000), metadata={
        "description": "replicate this VM: NAME-1..NAME-count, alike but for their random streams"})
    stagger_s = _Float(validate=validate.Range(0, MAX_SECONDS), metadata={
        "description": "with count: each copy's events come this much later than the one before"})

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> tuple[VM, ...]:
        count = data.pop("count", None)
        stagger = data.pop("stagger_s", 0.0)
        workload = data.pop("workload", None)
        if workload is not None:
            data["phases"] = tuple(workload["phases"])
            data["repeat"] = workload.get("repeat", _dataclass_default(VM, "repeat"))
        if "events" in data:
            data["events"] = tuple(data["events"])
        vm = VM(**data)
        return (vm,) if count is None else replicate(vm, count, stagger)


def expanded_indexes(document: dict, entry: int) -> range:
    """The indexes in the loaded scenario's vms of the document's VM entry ``entry`` (several
    with ``count``). For a document that loaded."""
    start = sum(vm.get("count", 1) for vm in document["vms"][:entry])
    return range(start, start + document["vms"][entry].get("count", 1))


def replicate(vm: VM, count: int, stagger_s: float = 0.0) -> tuple[VM, ...]:
    """``count`` copies of ``vm`` named NAME-1..NAME-count; copy i's events ``i * stagger_s`` later.
    The engine gives every VM its own random stream, so the copies differ only by it."""
    return tuple(dataclasses.replace(vm, name=f"{vm.name}-{i + 1}", events=tuple(
        dataclasses.replace(ev, at_s=ev.at_s + i * stagger_s) for ev in vm.events)) for i in range(count))


class DeviceSchema(Schema):
    read_us = _Float(required=True, validate=_positive(MAX_DEVICE_US))
    write_us = _Float(required=True, validate=_positive(MAX_DEVICE_US))
    parallelism = _Integer(validate=validate.Range(1, 4096))

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> Device:
        return Device(**data)


class DeviceMapField(fields.Field):
    """``{name: device object or preset name}``; errors are keyed by device name, so a problem
    reads ``host.devices.fast.read_us`` rather than marshmallow's ``key``/``value`` nesting."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Device]:
        if not isinstance(value, dict):
            raise ValidationError("must be an object mapping device names to devices")
        devices: dict[str, Device] = {}
        errors: dict[str, Any] = {}
        for name, spec in value.items():
            if not name or len(name) > 64:
                errors[name] = ["device names must be 1 to 64 characters"]
            elif isinstance(spec, str):
                if spec in DEVICE_PRESETS:
                    devices[name] = DEVICE_PRESETS[spec]
                else:
                    errors[name] = [f"unknown preset {spec!r}; presets: {', '.join(sorted(DEVICE_PRESETS))}"]
            elif isinstance(spec, dict):
                try:
                    devices[name] = DeviceSchema().load(spec)
                except ValidationError as err:
                    errors[name] = err.messages
            else:
                errors[name] = ["must be an object {read_us, write_us, parallelism} or a preset name"]
        if errors:
            raise ValidationError(errors)
        return devices


class CostsSchema(Schema):
    guest_fault_us = _Float(validate=validate.Range(0, MAX_COST_US))
    zero_fill_us = _Float(validate=validate.Range(0, MAX_COST_US))
    cow_break_us = _Float(validate=validate.Range(0, MAX_COST_US))
    compress_us = _Float(validate=validate.Range(0, MAX_COST_US))
    decompress_us = _Float(validate=validate.Range(0, MAX_COST_US))

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> Costs:
        return Costs(**data)


class HostSchema(Schema):
    memory_mb = _megabytes(required=True)
    reserve_mb = _megabytes(low=0)
    vm_overhead_mb = _Integer(validate=validate.Range(0, 65536))
    swap_device = _device_name()
    devices = DeviceMapField(metadata={
        "type": "object", "description": "device name -> {read_us, write_us, parallelism} or a preset name",
        "propertyNames": {"minLength": 1, "maxLength": 64},
        "additionalProperties": {"oneOf": [{"$ref": "#/components/schemas/Device"},
                                           {"type": "string", "enum": sorted(DEVICE_PRESETS)}]}})
    costs = fields.Nested(CostsSchema)

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> Host:
        return Host(**data)


class PolicyChoiceSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    params = fields.Dict(keys=fields.String(), load_default=dict)


class PolicyEventSchema(Schema):
    """``{"at_s": 60, "policy": "esx", "params": {"idle_tax_pct": 90}}``: the parameters are
    checked against the policy's own schema where the policy is known (CLI, API)."""
    at_s = _Float(required=True, validate=validate.Range(0, MAX_SECONDS))
    policy = fields.String(required=True, validate=validate.Length(min=1, max=100))
    params = fields.Dict(keys=fields.String(), required=True, validate=validate.Length(min=1))

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> PolicyEvent:
        return PolicyEvent(at_s=data["at_s"], policy=data["policy"], params=tuple(sorted(data["params"].items())))


class ScenarioSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(validate=validate.Length(max=10_000))
    duration_s = _Float(required=True, validate=_positive(MAX_SECONDS))
    seed = _Integer(validate=validate.Range(0, 2**63 - 1))
    epoch_s = _Float(validate=_positive(3600.0))
    slice_ms = _Float(validate=_positive(1000.0))
    host = fields.Nested(HostSchema, required=True)
    vms = fields.List(fields.Nested(VMSchema), required=True)
    policies = fields.List(fields.Nested(PolicyChoiceSchema), load_default=list)
    policy_events = fields.List(fields.Nested(PolicyEventSchema))

    @post_load
    def _tuples(self, data: dict, **kwargs: Any) -> dict:
        if "policy_events" in data:
            data["policy_events"] = tuple(data["policy_events"])
        return data


# --- public API ---------------------------------------------------------------------------

def load_scenario(data: Any, base_dir: str | PathLike | None = None) -> tuple[Scenario, list[dict]]:
    """Validate a scenario document and build the Scenario, plus the document's policy list
    (``[{"name": str, "params": dict}]``, empty if it names none).

    Relative trace paths are resolved against ``base_dir`` (the scenario file's folder) when
    given; every trace file must exist. Raises ScenarioValidationError listing every problem.
    """
    if not isinstance(data, dict):
        raise ScenarioValidationError({ROOT: ["a scenario must be a JSON object"]})
    try:
        loaded = ScenarioSchema().load(data)
    except ValidationError as err:
        raise ScenarioValidationError(flatten_errors(err.messages)) from None
    policies = loaded.pop("policies")
    # each entry of the document's vms is one VM, or several with count: errors name the entry
    origin = [i for i, entry in enumerate(loaded["vms"]) for _ in entry]
    loaded["vms"] = _resolve_trace_paths(tuple(vm for entry in loaded["vms"] for vm in entry), base_dir, origin)
    scenario = Scenario(**loaded)
    try:
        scenario.check()
    except ScenarioError as err:
        raise ScenarioValidationError({_document_path(err.where, origin): [err.message]}) from None
    return scenario, policies


def load_scenario_file(path: str | PathLike) -> tuple[Scenario, list[dict]]:
    """Read a JSON scenario file; trace paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioValidationError({str(path): ["no such file"]}) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioValidationError({str(path): [f"cannot read: {exc}"]}) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioValidationError(
            {str(path): [f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]}) from None
    return load_scenario(data, base_dir=path.parent)


def scenario_to_dict(scenario: Scenario) -> dict:
    """The document for ``scenario``, with every field written out; ``load_scenario`` of it gives
    back an equal Scenario. Stable key order, so it can be hashed for a fingerprint."""
    plain = dataclasses.asdict(scenario)
    doc = {key: plain[key] for key in ("name", "description", "duration_s", "seed", "epoch_s", "slice_ms")}
    doc["host"] = plain["host"]
    doc["vms"] = []
    for vm in plain["vms"]:
        workload = {"phases": vm.pop("phases"), "repeat": vm.pop("repeat")}
        events = vm.pop("events")
        doc["vms"].append({**vm, "workload": workload, "events": events})
    doc["policy_events"] = [{"at_s": e.at_s, "policy": e.policy, "params": e.changes} for e in scenario.policy_events]
    return json.loads(json.dumps(doc))   # tuples to lists: the document is plain JSON data


# --- helpers -------------------------------------------------------------------------------

def _dataclass_default(cls: type, name: str) -> Any:
    field = cls.__dataclass_fields__[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _resolve_trace_paths(vms: tuple[VM, ...], base_dir: str | PathLike | None, origin: list[int]) -> tuple[VM, ...]:
    """Resolve relative trace paths against base_dir and check that every trace file exists."""
    resolved = []
    errors: dict[str, list[str]] = {}
    for k, vm in enumerate(vms):
        i = origin[k]
        phases = []
        for j, phase in enumerate(vm.phases):
            if phase.trace is not None:
                trace = Path(phase.trace).expanduser()
                if base_dir is not None and not trace.is_absolute():
                    trace = Path(base_dir) / trace
                if not trace.is_file():
                    errors[f"vms[{i}].workload.phases[{j}].trace"] = [f"no such trace file: {trace}"]
                phase = dataclasses.replace(phase, trace=str(trace))
            phases.append(phase)
        resolved.append(dataclasses.replace(vm, phases=tuple(phases)))
    if errors:
        raise ScenarioValidationError(errors)
    return tuple(resolved)


_PHASES_IN_CONFIG = re.compile(r"^(vms\[\d+\])\.phases\[")
_VM_INDEX = re.compile(r"^vms\[(\d+)\]")


def _document_path(where: str, origin: list[int]) -> str:
    """Scenario.check() names fields as the dataclasses have them: the document nests phases
    under ``workload``, and a VM with ``count`` is one entry of the document's vms."""
    where = _VM_INDEX.sub(lambda m: f"vms[{origin[int(m.group(1))]}]", where)
    return _PHASES_IN_CONFIG.sub(r"\1.workload.phases[", where)
