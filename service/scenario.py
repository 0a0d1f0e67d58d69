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

ROOT = "(document)"      # the path of a problem that belongs to the document as a whole

MAX_MB = 2**24                      # 16 TB, beyond any real host
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


# --- JSON-strict fields: a number written as a string, or 1 for true, is a mistake in a document --

class _Float(fields.Float):
    def _validated(self, value: Any) -> float:
        if isinstance(value, str):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class _Integer(fields.Integer):
    def __init__(self, **kwargs: Any):
        super().__init__(strict=True, **kwargs)


class _Boolean(fields.Boolean):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _positive(high: float) -> validate.Range:
    """0 < value <= high"""
    return validate.Range(min=0, max=high, min_inclusive=False)


def _fraction() -> _Float:
    return _Float(validate=validate.Range(0.0, 1.0))


def _megabytes(low: int = 1, **kwargs: Any) -> _Integer:
    return _Integer(validate=validate.Range(low, MAX_MB), **kwargs)


def _device_name(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=64), **kwargs)


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

    @post_load
    def _build(self, data: dict, **kwargs: Any) -> VM:
        workload = data.pop("workload", None)
        if workload is not None:
            data["phases"] = tuple(workload["phases"])
            data["repeat"] = workload.get("repeat", _dataclass_default(VM, "repeat"))
        if "events" in data:
            data["events"] = tuple(data["events"])
        return VM(**data)


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
    devices = DeviceMapField()
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
    loaded["vms"] = _resolve_trace_paths(loaded["vms"], base_dir)
    scenario = Scenario(**loaded)
    try:
        scenario.check()
    except ScenarioError as err:
        raise ScenarioValidationError({_document_path(err.where): [err.message]}) from None
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


def _resolve_trace_paths(vms: list[VM], base_dir: str | PathLike | None) -> tuple[VM, ...]:
    """Resolve relative trace paths against base_dir and check that every trace file exists."""
    resolved = []
    errors: dict[str, list[str]] = {}
    for i, vm in enumerate(vms):
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


def _document_path(where: str) -> str:
    """Scenario.check() names fields as the dataclasses have them; the document nests phases
    under ``workload``."""
    return _PHASES_IN_CONFIG.sub(r"\1.workload.phases[", where)


def flatten_errors(messages: Any, path: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error messages to ``{"vms[1].workload.phases[0].kind": [...]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, sub in messages.items():
            if key == "_schema":
                sub_path = path
            elif isinstance(key, int):
                sub_path = f"{path}[{key}]"
            else:
                sub_path = f"{path}.{key}" if path else str(key)
            for p, msgs in flatten_errors(sub, sub_path).items():
                out.setdefault(p, []).extend(msgs)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[path or ROOT] = list(messages)
    elif isinstance(messages, list):
        for sub in messages:
            for p, msgs in flatten_errors(sub, path).items():
                out.setdefault(p, []).extend(msgs)
    else:
        out[path or ROOT] = [str(messages)]
    return out
