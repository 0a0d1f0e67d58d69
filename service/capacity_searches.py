"""Capacity searches on the service: service.capacity's search, driven by stored runs.

A search holds the validated scenario, the VM to copy, the SLA and the policies. Each probe is an
ordinary experiment (the scenario with ``count`` copies of the VM, one run under one policy),
linked in ``capacity_probes``. Nothing waits for a probe: when a probe's run ends, the worker that
ran it calls ``advance``, which reads the search's finished probes, asks ``capacity.next_count``
what to probe next (a function of the probes alone) and stores that probe; probes of different
policies are queued side by side, so every worker takes them. Every worker's recovery sweep
advances unfinished searches too, so a worker that died between the end of a run and the next
probe loses nothing; the probe's primary key makes two advances of the same search add it once.
When every policy's search has ended, the results are written once, on the search row.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Optional

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, selectinload

from .capacity import SLA, Capacity, Probe, answer_line, conclude, judge, next_count, startable, with_copies
from .db import first_line, hold_row, session_scope
from .experiments import create_experiment, delete_with_experiments, sha256_of, validate_document
from .idempotency import add_or_replay, replay
from .models import CapacityProbe, CapacitySearch, Experiment, Run, RunStatus, utcnow
from .runs import cancel_unfinished, enqueue_group
from .scenario import ROOT, ScenarioValidationError
from .settings import Settings, get_settings

log = logging.getLogger(__name__)
FIELDS = {"name", "scenario", "vm", "sla", "policies", "max_count"}
SLA_FIELDS = {"max_slowdown", "min_fairness", "max_blocked_fraction"}


def create_search(session: Session, body: Any, idempotency_key: Optional[str] = None, *,
                  settings: Optional[Settings] = None) -> CapacitySearch:
    """Validate the request, store the search and its first probe per policy (flushed, not
    committed; the caller commits, then enqueues ``queued_runs``). ScenarioValidationError names
    each problem by its place in the request (``scenario.vms[0].memory_mb``, ``vm``, ``sla``)."""
    settings = settings or get_settings()
    request_sha256 = sha256_of(body)
    existing = replay(session, CapacitySearch, idempotency_key, request_sha256, "capacity search")
    if existing is not None:
        return existing
    vm, sla, max_count = _read_request(body, settings)
    try:
        valid = validate_document(session, body["scenario"], body.get("policies"), settings=settings)
    except ScenarioValidationError as exc:
        raise ScenarioValidationError({_in_request(path, "policies" in body): m
                                       for path, m in exc.errors.items()}) from None
    try:
        with_copies(valid.scenario, vm, 1)
    except ValueError as exc:
        raise ScenarioValidationError({"vm": [str(exc)]}) from None
    limit = startable(valid.scenario, vm)
    max_count = max_count if limit is None else min(max_count, limit)
    choices = [{"name": name, "params": params} for name, _, _, params in valid.pinned]
    snapshot = valid.snapshot
    try:       # the most copies must fit the service's limits (references, engine memory)
        validate_document(session, probe_document(snapshot, vm, max_count), choices[:1], settings=settings)
    except ScenarioValidationError as exc:
        raise ScenarioValidationError({"max_count": [f"{max_count} copies of {vm!r}: {m}" for ms in exc.errors.values()
                                                     for m in ms]}) from None
    search = CapacitySearch(
        name=str(body.get("name") or f"capacity of {vm} in {valid.scenario.name}")[:200], scenario=snapshot,
        vm_name=vm, sla=sla, policies=choices, max_count=max_count, idempotency_key=idempotency_key,
        request_sha256=request_sha256, scenario_sha256=scenario_key(snapshot, vm))
    stored = add_or_replay(session, search, "capacity search")
    if stored is not search:
        return stored
    for index in range(len(choices)):
        _add_probe(session, search, index, 1, settings)
    session.flush()
    return search


def scenario_key(snapshot: dict, vm: str) -> str:
    """What makes two searches comparable: the same scenario (name aside) and the same VM."""
    return sha256_of({"scenario": {k: v for k, v in snapshot.items() if k not in ("name", "description")}, "vm": vm})


def _read_request(body: Any, settings: Settings) -> tuple[str, dict, int]:
    if not isinstance(body, dict):
        raise ScenarioValidationError({ROOT: ['a capacity search is a JSON object: {"scenario", "vm", "sla", '
                                              '"policies", "max_count"}']})
    errors: dict[str, list[str]] = {key: [f"unknown field; a capacity search has {', '.join(sorted(FIELDS))}"]
                                    for key in map(str, set(body) - FIELDS)}
    if not isinstance(body.get("scenario"), dict):
        errors["scenario"] = ["required: the experiment document (scenario format) the copies are added to"]
    vm = body.get("vm")
    if not (isinstance(vm, str) and 0 < len(vm) <= 100):
        errors["vm"] = ["required: the name of the VM to copy"]
    if "name" in body and not (isinstance(body["name"], str) and 0 < len(body["name"]) <= 200):
        errors["name"] = ["a text of 1 to 200 characters"]
    sla = body.get("sla")
    if not isinstance(sla, dict):
        errors["sla"] = ['required: {"max_slowdown": 1.5} (and optionally min_fairness, max_blocked_fraction)']
        sla = {}
    for key in map(str, set(sla) - SLA_FIELDS):
        errors[f"sla.{key}"] = [f"unknown field; the SLA has {', '.join(sorted(SLA_FIELDS))}"]
    checks = {"max_slowdown": (1.0, 1e6, True), "min_fairness": (0.0, 1.0, False),
              "max_blocked_fraction": (0.0, 1.0, False)}
    for key, (low, high, required) in checks.items():
        value = sla.get(key)
        if value is None and not (required and isinstance(body.get("sla"), dict)):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            errors[f"sla.{key}"] = [f"a number from {low:g} to {high:g}" + (" (required)" if required else "")]
    if "policies" in body and not isinstance(body["policies"], list):
        errors["policies"] = ['a list of {"name", "params"}']
    for key in ("name", "vm"):
        if isinstance(body.get(key), str) and "\x00" in body[key]:
            errors[key] = ["must not contain NUL characters"]
    max_count = body.get("max_count", 64)
    if isinstance(max_count, bool) or not isinstance(max_count, int) or not 1 <= max_count <= settings.max_vms:
        errors["max_count"] = [f"an integer from 1 to {settings.max_vms} (VMEMLAB_MAX_VMS)"]
    if errors:
        raise ScenarioValidationError(errors)
    blocked = sla.get("max_blocked_fraction")
    return vm, {"max_slowdown": float(sla["max_slowdown"]), "min_fairness": sla.get("min_fairness"),
                "max_blocked_fraction": 0.05 if blocked is None else float(blocked)}, max_count


def _in_request(path: str, policies_in_body: bool) -> str:
    """Where a problem of the scenario document is in the request."""
    if policies_in_body and path.startswith("policies"):
        return path
    return "scenario" if path == ROOT else f"scenario.{path}"


def probe_document(snapshot: dict, vm: str, count: int) -> dict:
    """The search's scenario with the VM (or the copies a ``count`` entry made of it) replaced,
    in its place, by one entry of ``count`` copies started as far apart as its copies were."""
    names = [v["name"] for v in snapshot["vms"]]
    copies = [i for i, name in enumerate(names)
              if name == vm or (name.startswith(f"{vm}-") and name[len(vm) + 1:].isdigit())]
    doc = copy.deepcopy(snapshot)
    entry = doc["vms"][copies[0]]
    entry.update(name=vm, count=count)
    if len(copies) > 1 and entry["events"] and snapshot["vms"][copies[1]]["events"]:
        entry["stagger_s"] = snapshot["vms"][copies[1]]["events"][0]["at_s"] - entry["events"][0]["at_s"]
    doc["vms"] = [v for i, v in enumerate(doc["vms"]) if i == copies[0] or i not in copies]
    return doc


def _add_probe(session: Session, search: CapacitySearch, index: int, count: int, settings: Settings) -> Experiment:
    choice = search.policies[index]
    document = probe_document(search.scenario, search.vm_name, count)
    document["name"] = f"{search.name}: {count} x {search.vm_name} ({choice['name']})"[:200]
    experiment = create_experiment(session, document, [choice], settings=settings)
    session.add(CapacityProbe(search_id=search.id, policy_index=index, count=count, experiment=experiment))
    return experiment


# --- advancing -------------------------------------------------------------------------------------

def advance(search_id: int, settings: Optional[Settings] = None) -> list[int]:
    """Add the next probe of every policy whose probes have all ended, each in its own
    transaction that holds the search row (so that a cancel or delete either comes first and no
    probe is added, or comes after and sees it); write the results once every policy's search is
    over. Returns the new runs' ids, committed, for the caller to enqueue."""
    settings = settings or get_settings()
    new_runs: list[int] = []
    with session_scope() as session:
        search = _load(session, search_id)
        if search is None or search.finished_at is not None:
            return []
        wanted = [(i, state["next"]) for i, state in enumerate(policy_states(search)) if state["next"] is not None]
    for index, count in wanted:
        try:
            with session_scope() as session:
                hold_row(session, CapacitySearch.__table__, search_id)
                search = session.scalar(select(CapacitySearch).where(CapacitySearch.id == search_id))
                if search is None or search.cancelled_at is not None:
                    break
                experiment = _add_probe(session, search, index, count, settings)
                session.flush()
                new_runs += [run.id for run in experiment.runs]
        except IntegrityError:
            log.info("capacity search %s: probe %s of policy %s was added by another worker", search_id, count, index)
        except ScenarioValidationError as exc:    # the plugin was disabled, or a limit changed, meanwhile
            _record_error(search_id, f"policies[{index}]: the probe at {count} copies was refused: "
                                     f"{'; '.join(exc.lines()[:3])}")
    with session_scope() as session:
        search = _load(session, search_id)
        if search is None:
            return new_runs
        states = policy_states(search)
        if all(state["status"] != "running" for state in states):
            session.execute(update(CapacitySearch).where(CapacitySearch.id == search_id,
                                                         CapacitySearch.finished_at.is_(None))
                            .values(finished_at=utcnow(), results=[_result(state) for state in states]))
    return new_runs


def advance_for_run(run_id: int, settings: Optional[Settings] = None) -> list[int]:
    """``advance`` the search a run's probe belongs to, if it is one."""
    with session_scope() as session:
        search_id = session.scalar(select(CapacityProbe.search_id).join(Run, Run.experiment_id ==
                                                                        CapacityProbe.experiment_id)
                                   .where(Run.id == run_id))
    return advance(search_id, settings) if search_id is not None else []


def advance_and_enqueue(app: Any = None, run_id: Optional[int] = None) -> list[int]:
    """For a worker: advance the search whose probe ``run_id`` is (or, without one, every
    unfinished search, as the recovery sweep does) and queue the new probes. Never raises: a
    failure is logged, and the next recovery sweep tries again; one search that fails does not
    hold up the others."""
    try:
        search_ids = [None] if run_id is not None else unfinished_searches()
    except Exception:  # noqa: BLE001 - the database is away: the next sweep tries again
        log.exception("listing the unfinished capacity searches failed")
        return []
    sent: list[int] = []
    for search_id in search_ids:
        try:
            new_runs = advance_for_run(run_id) if search_id is None else advance(search_id)
            enqueue_group(new_runs, app=app)
            sent += new_runs
        except Exception:  # noqa: BLE001 - stored runs the broker did not take are sent again by the sweep
            log.exception("advancing capacity search %s (after run %s) failed; the recovery sweep tries again",
                          search_id, run_id)
    return sent


def unfinished_searches() -> list[int]:
    with session_scope() as session:
        return list(session.scalars(select(CapacitySearch.id).where(CapacitySearch.finished_at.is_(None))
                                    .order_by(CapacitySearch.id)))


def _record_error(search_id: int, line: str) -> None:
    with session_scope() as session:
        search = session.get(CapacitySearch, search_id)
        if search is not None and line not in (search.error or ""):
            search.error = f"{search.error}\n{line}" if search.error else line


def _load(session: Session, search_id: int) -> Optional[CapacitySearch]:
    return session.scalar(select(CapacitySearch).where(CapacitySearch.id == search_id).options(*with_probes()))


def with_probes() -> tuple:
    """Loader options for reading searches: probes, their runs (whose summaries judge them), and
    not the probes' scenario snapshots, which nothing here reads."""
    return (selectinload(CapacitySearch.probes).selectinload(CapacityProbe.experiment)
            .options(defer(Experiment.scenario), selectinload(Experiment.runs)),)


# --- reading -------------------------------------------------------------------------------------------

def sla_of(search: CapacitySearch) -> SLA:
    return SLA(search.sla["max_slowdown"], search.sla.get("min_fairness"), search.sla["max_blocked_fraction"])


def policy_states(search: CapacitySearch) -> list[dict[str, Any]]:
    """Per policy: ``status`` (running, succeeded, failed, cancelled), the judged ``probes``,
    the ``next`` count to probe (None if none is due now) and, once over, the ``capacity``."""
    sla = sla_of(search)
    errors = (search.error or "").splitlines()
    states = []
    for index, choice in enumerate(search.policies):
        runs = {p.count: p.experiment.runs[0] for p in search.probes if p.policy_index == index and p.experiment.runs}
        probes: dict[int, Probe] = {}
        for count, run in runs.items():
            if run.status == RunStatus.SUCCEEDED.value:
                probes[count] = judge(run.summary or {}, count, sla)
                probes[count].run = run.id
        state = {"policy": choice["name"], "params": choice["params"], "probes": probes, "next": None,
                 "capacity": None, "error": None, "policy_version": next((r.policy_version for r in runs.values()), None)}
        error = next((line.split(": ", 1)[1] for line in errors if line.startswith(f"policies[{index}]: ")), None)
        ended = [run for run in runs.values() if run.status in (RunStatus.FAILED.value, RunStatus.CANCELLED.value)]
        if error is not None or ended:
            bad = ended[0] if ended else None
            state["status"] = "failed" if error or bad.status == RunStatus.FAILED.value else "cancelled"
            state["error"] = error or (f"probe run {bad.id} ({next(c for c, r in runs.items() if r is bad)} copies) "
                                       f"{bad.status}" + (f": {first_line(bad.error)}" if bad.error else ""))
        elif len(probes) < len(runs):
            state["status"] = "running"                       # a probe is queued or running
        elif search.cancelled_at is not None and next_count(probes, search.max_count) is not None:
            state["status"], state["error"] = "cancelled", "the search was cancelled"
        else:
            due = next_count(probes, search.max_count)
            if due is None:
                state["status"] = "succeeded"
                state["capacity"] = conclude(probes, search.max_count, choice["name"])
            else:
                state["status"], state["next"] = "running", due
        states.append(state)
    return states


def _result(state: dict[str, Any]) -> dict[str, Any]:
    capacity: Optional[Capacity] = state["capacity"]
    probes = [p for _, p in sorted(state["probes"].items())]
    result = {"policy": state["policy"], "policy_version": state["policy_version"], "params": state["params"],
              "status": state["status"], "error": state["error"], "count": None, "limited_by": None,
              "worst_slowdown": None, "non_monotone": [], "probes": [vars(p).copy() for p in probes]}
    if capacity is not None:
        result.update(count=capacity.count, limited_by=capacity.limited_by, worst_slowdown=capacity.worst_slowdown,
                      non_monotone=capacity.non_monotone)
    return result


def search_results(search: CapacitySearch) -> list[dict[str, Any]]:
    """Per policy, as stored when the search ended, else as the probes so far show."""
    return search.results if search.results is not None else [_result(s) for s in policy_states(search)]


def search_answer(search: CapacitySearch, results: list[dict[str, Any]]) -> str:
    """The search's one-line answer, from its ``search_results``."""
    return answer_line(results, search.scenario["host"]["memory_mb"], search.vm_name, search.sla["max_slowdown"])


def search_status(results: list[dict[str, Any]]) -> str:
    """One word for the search, from its ``search_results``."""
    statuses = {r["status"] for r in results}
    for status in ("running", "failed", "cancelled"):
        if status in statuses:
            return status
    return "succeeded"


def lock_search(session: Session, search_id: int) -> Optional[CapacitySearch]:
    """The search, its row held until the transaction ends (an advance adding a probe finishes
    first, or waits), with its probes as they are now."""
    hold_row(session, CapacitySearch.__table__, search_id)
    return session.scalar(select(CapacitySearch).where(CapacitySearch.id == search_id).options(*with_probes())
                          .execution_options(populate_existing=True))


def cancel_search(session: Session, search: CapacitySearch) -> int:
    """Mark the search cancelled (no probe is added after this) and cancel the probes not yet
    finished; the caller commits. Call it on a search from ``lock_search``."""
    if search.cancelled_at is None and search.finished_at is None:
        search.cancelled_at = utcnow()
    return cancel_unfinished(session, [run for probe in search.probes for run in probe.experiment.runs])


def history(session: Session, search: CapacitySearch, limit: int = 20) -> list[CapacitySearch]:
    """Other searches of the same scenario and VM, newest first."""
    return list(session.scalars(select(CapacitySearch).where(
        CapacitySearch.scenario_sha256 == search.scenario_sha256, CapacitySearch.id != search.id)
        .options(*with_probes()).order_by(CapacitySearch.id.desc()).limit(limit)))


def delete_search(session: Session, search: CapacitySearch) -> None:
    delete_with_experiments(session, search, [probe.experiment for probe in search.probes])
