"""``vmemlab simulate``: run a scenario under one or more policies, in this process, and compare them."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Iterable, Sequence, TextIO

from ..answers import summaries_answer
from ..engine import simulate
from ..engine.hooks import describe_failure
from ..policies import (
    DEFAULT_POLICY, BrokenPolicyError, UnknownPolicyError, load_policy, policy_event_problems,
)
from ..scenario import ScenarioValidationError, load_scenario_file
from ..sdk import Policy, PolicyParameterError
from .common import Column, UsageError, _count, _mb, _number, _parameter_problems, _ratio, format_table
from .parallel import ProcessFailed, run_in_processes
from .progress import ProgressLine


def parse_param_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["esx.idle_tax=0.75", "kvm.victim=clock"]`` -> ``{"esx": {"idle_tax": 0.75}, ...}``.
    Values are read as JSON when they parse (numbers, true/false, lists), else as strings."""
    overrides: dict[str, dict[str, Any]] = {}
    problems = []
    for item in items:
        target, sep, text = item.partition("=")
        policy, dot, key = target.partition(".")
        if not (sep and dot and policy and key):
            problems.append(f"--param {item!r}: expected POLICY.KEY=VALUE, e.g. esx.idle_tax=0.75")
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides.setdefault(policy, {})[key] = value
    if problems:
        raise UsageError(*problems)
    return overrides


def choose_policies(cli_names: Sequence[str], scenario_policies: Sequence[dict],
                    overrides: dict[str, dict[str, Any]]) -> list[dict]:
    """The policies to run as ``[{"name", "params"}]``: ``--policy`` names (with no params but
    the overrides) replace the scenario's list; with neither, the static baseline."""
    if cli_names:
        chosen = [{"name": name, "params": {}} for name in cli_names]
    elif scenario_policies:
        chosen = [{"name": p["name"], "params": dict(p.get("params") or {})} for p in scenario_policies]
    else:
        chosen = [{"name": DEFAULT_POLICY, "params": {}}]
    names = {choice["name"] for choice in chosen}
    stray = sorted(set(overrides) - names)
    if stray:
        raise UsageError(*(f"--param {name}.*: policy {name!r} is not among the policies run "
                           f"({', '.join(sorted(names))})" for name in stray))
    for choice in chosen:
        choice["params"].update(overrides.get(choice["name"], {}))
    return chosen


def build_policies(choices: Sequence[dict]) -> list[tuple[type[Policy], dict, bool]]:
    """Load every chosen policy and check its parameters before any run starts, so that a typo in
    the last one is reported at once, with all the others: ``(class, params, trust level)`` each,
    the trust level read before any code of the plugin's ran beyond its import."""
    loaded, problems = [], []
    for choice in choices:
        try:
            cls = load_policy(choice["name"])
            loaded.append((cls, cls.load_params(choice["params"]), bool(cls.trusts_guest)))
        except (UnknownPolicyError, BrokenPolicyError) as exc:
            problems.append(str(exc))
        except PolicyParameterError as exc:
            problems.extend(_parameter_problems(exc))
    if problems:
        raise UsageError(*problems)
    return loaded


def command_simulate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scenario, scenario_policies = load_scenario_file(args.scenario)
    if args.series and not args.json:
        raise UsageError("--series needs --json: the series are JSON")
    choices = choose_policies(args.policy or [], scenario_policies, parse_param_overrides(args.param or []))
    loaded = build_policies(choices)
    problems = policy_event_problems(scenario.policy_events, choices)
    if problems:
        raise ScenarioValidationError(problems)

    jobs = args.jobs or os.cpu_count() or 1
    parallel = jobs > 1 and len(loaded) > 1
    tasks = [(scenario, cls.name, params, trusts_guest, args.series, not args.quiet, None if parallel else err)
             for cls, params, trusts_guest in loaded]

    def reported(index: int, result: Any, _done: int) -> None:
        if isinstance(result, ProcessFailed):
            cls = loaded[index][0]
            err.write(f"error: policy {cls.name!r} {cls.version}: {result}\n")
        elif "error" in result:
            err.write(f"error: {result['error']}\n")

    results = run_in_processes(simulate_policy, tasks, jobs, reported)
    summaries = [{"policy": cls.name, "policy_version": cls.version, "error": str(result), "vms": []}
                 if isinstance(result, ProcessFailed) else result for (cls, _, _), result in zip(loaded, results)]

    if args.json:
        out.write(json.dumps(summaries, indent=2) + "\n")
    else:
        out.write(format_simulation(summaries, scenario_title(scenario)))
    return 1 if any("error" in s for s in summaries) else 0


def simulate_policy(scenario: Any, name: str, params: dict, trusts_guest: bool, series: bool, show: bool,
                    progress_to: TextIO | None) -> dict:
    """One policy's run, in this process or a pool's: its summary, or ``{"policy", "error", ...}``
    if the plugin's own code (constructor, hooks) failed, which fails its row and no other.
    Progress goes to ``progress_to``, or, in a pool's process, to its stderr a line at a time."""
    cls = load_policy(name)
    progress = ProgressLine(name, progress_to or sys.stderr, enabled=show,
                            interactive=False if progress_to is None else None)
    progress(0.0)
    try:
        result = simulate(scenario, cls.create(params), progress=progress, trusts_guest=trusts_guest)
    except (KeyboardInterrupt, SystemExit):
        progress.abandon()
        raise
    except Exception as exc:
        progress.abandon()
        return {"policy": cls.name, "policy_version": cls.version, "error": describe_failure(exc, cls), "vms": []}
    progress.finish()
    return {**result.summary, "series": result.series, "events": result.events} if series else result.summary


def scenario_title(scenario: Any) -> str:
    vms = len(scenario.vms)
    return (f"Scenario {scenario.name!r}: {vms} VM{'s' if vms != 1 else ''} on a "
            f"{scenario.host.memory_mb:,} MB host, {scenario.duration_s:g} s simulated, seed {scenario.seed}")


VM_COLUMNS = (
    Column("", "VM", "<", lambda s, vm: str(vm.get("name", "?"))),
    Column("", "policy", "<", lambda s, vm: str(s.get("policy", "?"))),
    Column("", "state", "<", lambda s, vm: str(vm.get("state", "?"))),
    Column("", "slowdown", ">", lambda s, vm: _ratio(vm.get("slowdown"))),
    Column("", "refs", ">", lambda s, vm: _count(vm.get("refs_done"))),
    Column("host swap", "ins", ">", lambda s, vm: _fault(vm, "host_swap_in")),
    Column("host swap", "outs", ">", lambda s, vm: _fault(vm, "host_swap_out")),
    Column("guest paging", "reads", ">", lambda s, vm: _fault(vm, "guest_pagefile_read")),
    Column("guest paging", "outs", ">", lambda s, vm: _fault(vm, "guest_page_out")),
    Column("double", "paging", ">", lambda s, vm: _fault(vm, "double_paging")),
    Column("peak MB", "resident", ">", lambda s, vm: _mb(vm.get("peak_resident_mb"))),
    Column("peak MB", "host-swapped", ">", lambda s, vm: _mb(vm.get("host_swapped_peak_mb"))),
    Column("peak MB", "ballooned", ">", lambda s, vm: _mb(vm.get("ballooned_peak_mb"))),
    Column("peak MB", "guest-paged", ">", lambda s, vm: _mb(vm.get("guest_paged_peak_mb"))),
    Column("allocated MB", "last min", ">", lambda s, vm: _mb(vm.get("allocated_last_minute_mb"))),
)


HOST_COLUMNS = (
    Column("", "policy", "<", lambda s, host: str(s.get("policy", "?"))),
    Column("", "version", "<", lambda s, host: str(s.get("policy_version", "?"))),
    Column("", "VMs", "<", lambda s, host: "failed" if s.get("error") else _vm_states(s.get("vms", []))),
    Column("mean", "slowdown", ">", lambda s, host: _ratio(s.get("slowdown"))),
    Column("", "fairness", ">", lambda s, host: _number(s.get("fairness"), 3)),
    Column("host used MB", "peak", ">", lambda s, host: _mb(host.get("peak_used_mb"))),
    Column("host used MB", "mean", ">", lambda s, host: _mb(host.get("mean_used_mb"))),
    Column("host swap", "peak MB", ">", lambda s, host: _mb(host.get("host_swap_peak_mb"))),
    Column("smart paging", "peak MB", ">", lambda s, host: _mb(host.get("smart_paging_peak_mb"))),
    Column("sharing saved", "mean MB", ">", lambda s, host: _mb(host.get("sharing_saved_mb_mean"))),
    Column("overcommit", "ratio", ">", lambda s, host: _number(host.get("overcommit_ratio"), 2)),
    Column("", "states % of time", "<", lambda s, host: _states(host.get("states_pct"))),
)


def format_simulation(summaries: Sequence[dict], title: str | None = None) -> str:
    """The comparison a capacity planner reads: one row per VM and policy, the policies of a VM
    next to each other, then one row per policy for the host. Missing values print as ``-``."""
    vm_rows: list[list[str] | None] = []
    for name in _vm_names(summaries):
        if vm_rows and len(summaries) > 1:
            vm_rows.append(None)
        vm_rows += [[c.cell(s, vm) for c in VM_COLUMNS]
                    for s in summaries for vm in s.get("vms", []) if vm.get("name") == name]
    host_rows = [[c.cell(s, s.get("host", {})) for c in HOST_COLUMNS] for s in summaries]
    lines = []
    if title:
        lines += [title, ""]
    answer = summaries_answer(summaries)
    if answer and len(summaries) > 1:
        lines += [answer, ""]
    lines += ["VMs (slowdown: simulated time per reference against the same VM unconstrained)"]
    lines += format_table(VM_COLUMNS, vm_rows)
    lines += ["", "Host"]
    lines += format_table(HOST_COLUMNS, host_rows)
    notes = [f"  {s.get('policy')}: {vm.get('name')} refused: {vm['refused_reason']}"
             for s in summaries for vm in s.get("vms", []) if vm.get("refused_reason")]
    notes += [f"  {s.get('policy')}: {note}" for s in summaries for note in s.get("notes", [])
              if ": refused (" not in note]   # printed above, from refused_reason
    notes += [f"  {s.get('policy')}: failed: {s['error']}" for s in summaries if s.get("error")]
    if notes:
        lines += ["", "Notes"] + notes
    engines = sorted({str(s["engine_version"]) for s in summaries if s.get("engine_version")})
    if engines:
        lines += ["", f"engine {', '.join(engines)}"]
    return "\n".join(lines) + "\n"


def _vm_names(summaries: Sequence[dict]) -> list[str]:
    names: dict[str, None] = {}     # insertion-ordered set: the scenario's VM order
    for s in summaries:
        names.update((str(vm.get("name")), None) for vm in s.get("vms", []))
    return list(names)


def _vm_states(vms: Sequence[dict]) -> str:
    """``"2 ran, 1 refused"``: the usual states first, any other the engine reports after them."""
    states = [str(vm.get("state", "?")) for vm in vms]
    order = [s for s in ("ran", "refused", "blocked") if s in states]
    order += sorted(set(states) - set(order))
    return ", ".join(f"{states.count(s)} {s}" for s in order) or "-"


def _states(shares: Any) -> str:
    if not shares:
        return "-"
    return " ".join(f"{state} {pct:.0f}" for state, pct in shares.items())


def _fault(vm: dict, kind: str) -> str:
    return _count((vm.get("faults") or {}).get(kind))
