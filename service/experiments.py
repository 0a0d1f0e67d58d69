"""Creating experiments: validate a scenario document and its policies, store a snapshot, and make
one queued run per policy. Used by the API and the CLI; the caller commits, then enqueues.

An experiment document is the scenario format (service.scenario) plus three kinds of references
to stored resources, resolved before validation:

- ``"host_id": 3`` instead of an inline ``"host"``;
- a VM ``{"template_id": 5, "name": "web1", ...}``: the template's fields, then the VM's own
  (so a VM can add a workload and events, or override any setting);
- a trace phase ``{"kind": "trace", "trace_id": 7}``, or ``"trace": "<stored file name>"``.
  Only stored traces can be named: a document never reads an arbitrary file of the server.

Policies come from the document's ``"policies"`` or from the ``policies`` argument (which then
replaces them); none at all means the baseline, ``static``.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import registry
from .db import first_line
from .engine import ENGINE_VERSION, PolicyError, Scenario
from .engine.hooks import HookTimer
from .idempotency import add_or_replay, replay
from .limits import check_limits, check_vm_count
from .models import Experiment, Host, Run, RunStatus, Trace, VMTemplate
from .policies import (
    DEFAULT_POLICY, BrokenPolicyError, UnknownPolicyError, entry_points_by_name, load_policy, policy_event_problems,
    restore_declared_trust,
)
from .scenario import ROOT, ScenarioValidationError, expanded_indexes, flatten_errors, load_scenario, scenario_to_dict
from .sdk import Policy, PolicyParameterError
from .settings import Settings, get_settings


def canonical_json(value: Any) -> str:
    """Stable text of a JSON value: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def fingerprint(scenario: dict[str, Any], policy: str, version: str, params: dict[str, Any]) -> str:
    """What identifies a simulated configuration: the scenario snapshot without its name and
    description (they change no result), the policy's name, version and effective parameters."""
    simulated = {k: v for k, v in scenario.items() if k not in ("name", "description")}
    return sha256_of({"scenario": simulated, "policy": policy, "version": version, "params": params})


def create_experiment(session: Session, document: Any, policies: Optional[Sequence[Any]] = None,
                      idempotency_key: Optional[str] = None, *,
                      settings: Optional[Settings] = None) -> Experiment:
    """Validate ``document`` (see the module docstring), check it against the resource limits
    of ``settings`` (service.limits) and store it as an experiment with one queued run per policy.
    Raises ScenarioValidationError (``errors`` maps document paths such as ``vms[0].memory_mb``,
    ``policies[1].params.idle_tax_pct`` or ``(document)`` to messages) with nothing added to the
    session, or service.idempotency.IdempotencyConflict.

    With an ``idempotency_key`` already used for the same request, returns that experiment with
    ``created`` False; nothing new is stored. The session is flushed (ids are set), not committed.
    If a concurrent request stores the same key first, the session is rolled back and that
    experiment returned.
    """
    settings = settings or get_settings()
    request_sha256 = sha256_of({"document": document, "policies": None if policies is None else list(policies)})
    existing = replay(session, Experiment, idempotency_key, request_sha256, "experiment")
    if existing is not None:
        return existing
    valid = validate_document(session, document, policies, settings=settings)
    return store_experiment(session, valid, idempotency_key, request_sha256)


def store_experiment(session: Session, valid: "ValidDocument", idempotency_key: Optional[str] = None,
                     request_sha256: str = "") -> Experiment:
    """A validated document stored as an experiment with one queued run per policy (flushed)."""
    experiment = Experiment(
        name=valid.scenario.name, description=valid.scenario.description, seed=valid.scenario.seed,
        duration_s=valid.scenario.duration_s, scenario=valid.snapshot,
        policies=[{"name": c["name"], "params": c["params"]} for c in valid.chosen],
        host_id=valid.host.id if valid.host is not None else None, idempotency_key=idempotency_key,
        request_sha256=request_sha256)
    for name, version, distribution, params in valid.pinned:
        experiment.runs.append(Run(
            host_id=experiment.host_id, status=RunStatus.QUEUED.value, policy_name=name,
            policy_version=version, plugin_distribution=distribution, params=params,
            engine_version=ENGINE_VERSION, seed=valid.scenario.seed,
            fingerprint=fingerprint(valid.snapshot, name, version, params)))
    experiment.traces = list(valid.traces)
    experiment.templates = list(valid.templates)
    stored = add_or_replay(session, experiment, "experiment")
    if stored is not experiment:
        return stored
    for trace in valid.traces:
        session.expire(trace, ["ref_count"])          # counted again when next read
    return experiment


@dataclass
class ValidDocument:
    """An experiment document checked through: the scenario, its snapshot as stored (trace
    phases naming stored traces), the policies chosen with what they pin (name, version,
    distribution, effective parameters), and the stored resources it uses."""

    scenario: Scenario
    snapshot: dict[str, Any]
    chosen: list[dict[str, Any]]
    pinned: list[tuple[str, str, str, dict[str, Any]]]
    host: Optional[Host]
    templates: list[VMTemplate]
    traces: list[Trace]


def validate_document(session: Session, document: Any, policies: Optional[Sequence[Any]] = None, *,
                      settings: Settings) -> ValidDocument:
    """Everything create_experiment checks, with nothing stored: ScenarioValidationError
    naming each problem by its path in the document."""
    if not isinstance(document, dict):
        raise ScenarioValidationError({ROOT: ["an experiment must be a JSON object"]})
    if isinstance(document.get("vms"), list):
        check_vm_count(len(document["vms"]), settings)
    doc = copy.deepcopy(document)
    if policies is not None:
        doc["policies"] = copy.deepcopy(list(policies))
    host, templates, traces = _resolve_references(session, doc)
    scenario, chosen = load_scenario(doc, base_dir=settings.trace_dir)
    # a VM entry with count is several VMs of the scenario: its traces are theirs
    traces = {(k, j): trace for (i, j), trace in traces.items() for k in expanded_indexes(doc, i)}
    check_limits(scenario, settings, lambda i, j: ((traces[i, j].length, traces[i, j].footprint_pages)
                                                   if (i, j) in traces else None))
    if not chosen:
        chosen = [{"name": DEFAULT_POLICY, "params": {}}]
    pinned = _check_policies(session, chosen, settings)
    event_problems = policy_event_problems(scenario.policy_events, chosen)
    if event_problems:
        raise ScenarioValidationError(event_problems)
    snapshot = scenario_to_dict(scenario)
    for (i, j), trace in traces.items():      # back to names relative to the trace folder
        snapshot["vms"][i]["workload"]["phases"][j]["trace"] = trace.path
    used = sorted({t.id: t for t in traces.values()}.values(), key=lambda t: t.id)
    return ValidDocument(scenario, snapshot, chosen, pinned, host, sorted(templates.values(), key=lambda t: t.id),
                         used)


def delete_with_experiments(session: Session, study: Any, experiments: Sequence[Experiment]) -> None:
    """A sweep or capacity search with the experiments (and runs) it made."""
    session.delete(study)
    for experiment in experiments:
        session.delete(experiment)
    session.flush()


def delete_experiment(session: Session, experiment: Experiment) -> None:
    """Delete an experiment with its runs and their series, and release its traces. Runs still
    queued or running are cancelled first by the caller (request_cancel); a worker that finds its
    run gone stops at its next heartbeat without writing anything."""
    session.delete(experiment)
    session.flush()


# --- references to stored resources ------------------------------------------------------------

def _resolve_references(session: Session, doc: dict
                        ) -> tuple[Optional[Host], dict[int, VMTemplate], dict[tuple[int, int], Trace]]:
    errors: dict[str, list[str]] = {}
    host = None
    templates: dict[int, VMTemplate] = {}
    if "host_id" in doc:
        host_id = doc.pop("host_id")
        if "host" in doc:
            errors["host_id"] = ["give either host or host_id, not both"]
        elif not _is_id(host_id):
            errors["host_id"] = ["must be the id of a stored host"]
        else:
            host = session.get(Host, host_id)
            if host is None:
                errors["host_id"] = [f"no host with id {host_id}"]
            else:
                doc["host"] = copy.deepcopy(host.spec)

    traces: dict[tuple[int, int], Trace] = {}
    vms = doc.get("vms")
    for i, vm in enumerate(vms if isinstance(vms, list) else []):
        if isinstance(vm, dict) and "template_id" in vm:
            template_id = vm.pop("template_id")
            template = session.get(VMTemplate, template_id) if _is_id(template_id) else None
            if template is None:
                errors[f"vms[{i}].template_id"] = [f"no VM template with id {template_id!r}"]
            else:
                templates[template.id] = template
                vm = vms[i] = {**copy.deepcopy(template.spec), **vm}
        workload = vm.get("workload") if isinstance(vm, dict) else None
        phases = workload.get("phases") if isinstance(workload, dict) else None
        for j, phase in enumerate(phases if isinstance(phases, list) else []):
            if not isinstance(phase, dict):
                continue
            where = f"vms[{i}].workload.phases[{j}]"
            trace = None
            if "trace_id" in phase:
                trace_id = phase.pop("trace_id")
                if phase.get("trace") is not None:
                    errors[f"{where}.trace_id"] = ["give either trace or trace_id, not both"]
                    continue
                trace = session.get(Trace, trace_id) if _is_id(trace_id) else None
                if trace is None:
                    errors[f"{where}.trace_id"] = [f"no stored trace with id {trace_id!r}"]
                    continue
            elif isinstance(phase.get("trace"), str):
                trace = session.scalar(select(Trace).where(Trace.path == phase["trace"]))
                if trace is None:
                    errors[f"{where}.trace"] = [f"no stored trace {phase['trace']!r}: upload the trace and name it "
                                                "by trace_id"]
                    continue
            if trace is not None:
                phase["trace"] = trace.path
                traces[(i, j)] = trace
    if errors:
        raise ScenarioValidationError(errors)
    return host, templates, traces


MAX_ID = 2**31 - 1     # row ids are 32-bit on both databases; a larger one names no row


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


# --- policies ----------------------------------------------------------------------------------

def _check_policies(session: Session, chosen: list[dict], settings: Settings
                    ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Each policy installed, enabled and with valid parameters: ``(name, version, distribution,
    effective params)`` per policy, in order."""
    errors: dict[str, list[str]] = {}
    if len(chosen) > settings.max_policies:
        raise ScenarioValidationError({"policies": [f"at most {settings.max_policies} policies per experiment"]})
    pinned = []
    seen: dict[str, int] = {}
    for i, choice in enumerate(chosen):
        name, params = choice["name"], choice["params"]
        try:
            cls = load_policy(name)
        except (UnknownPolicyError, BrokenPolicyError) as exc:
            errors[f"policies[{i}].name"] = [str(exc)]
            continue
        refused = registry.refusal(session, name, cls.version, _distribution(cls), settings.plugins_auto_enable)
        if refused is not None:
            errors[f"policies[{i}].name"] = [refused]
            continue
        declared = cls.trusts_guest
        try:
            policy = HookTimer(name, settings.plugin_time_limit_s or None).call("create", cls.create, params)
            if type(policy).trusts_guest is not declared or getattr(policy, "trusts_guest", None) is not declared:
                restore_declared_trust()
                raise PolicyError(name, "its constructor changed trusts_guest; a policy's trust level is fixed "
                                        "when it is loaded")
        except PolicyParameterError as exc:
            for path, messages in flatten_errors(exc.messages, f"policies[{i}].params").items():
                errors.setdefault(path, []).extend(messages)
            continue
        except Exception as exc:         # someone else's code: its failure is the request's problem
            errors[f"policies[{i}].name"] = [
                f"plugin {name!r} {cls.version} ({_distribution(cls) or 'unknown distribution'}) cannot be created "
                f"with these parameters: {first_line(exc)}"]
            continue
        effective = effective_params(cls, params)
        key = sha256_of({"name": name, "params": effective})
        if key in seen:
            errors[f"policies[{i}]"] = [f"same policy and parameters as policies[{seen[key]}]"]
            continue
        seen[key] = i
        pinned.append((name, cls.version, _distribution(cls), effective))
    if errors:
        raise ScenarioValidationError(errors)
    return pinned


def effective_params(cls: type[Policy], params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with every default filled in, as JSON: what the policy will really use."""
    schema = cls.Params()
    try:
        dumped = schema.dump(schema.load(dict(params or {})))
        json.dumps(dumped, allow_nan=False)
        return dumped
    except (TypeError, ValueError):
        return dict(params or {})


def _distribution(cls: type[Policy]) -> str:
    """The installed distribution whose entry point provides the policy."""
    ep = entry_points_by_name().get(cls.name)
    return ep.dist.name if ep is not None and ep.dist is not None else ""
