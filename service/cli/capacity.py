"""``vmemlab capacity``: how many copies of one VM fit on the host under each policy, at an SLA,
answered in one line; the policies' searches run in parallel processes (``--jobs``)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence, TextIO

from ..capacity import SLA, Capacity, Probe, answer_line, capacity_search, copies_of, with_copies
from ..policies import load_policy
from ..scenario import load_scenario_file
from .common import Column, UsageError, _mb, _ratio, format_table
from .simulate import build_policies, choose_policies, parse_param_overrides


def command_capacity(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scenario, scenario_policies = load_scenario_file(args.scenario)
    choices = choose_policies(args.policy or [], scenario_policies, parse_param_overrides(args.param or []))
    loaded = build_policies(choices)
    if args.sla <= 0 or args.max_count < 1:
        raise UsageError("--sla must be positive and --max-count at least 1")
    try:
        with_copies(scenario, args.vm, 1)
    except ValueError as exc:
        raise UsageError(f"--vm: {exc}") from None
    sla = SLA(args.sla, args.min_fairness, args.max_blocked)
    tasks = [(scenario, args.vm, cls.name, params, sla, args.max_count, not args.quiet) for cls, params, _ in loaded]
    jobs = min(args.jobs or os.cpu_count() or 1, len(tasks))
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_search, *zip(*tasks)))
    else:
        results = [_search(*task) for task in tasks]
    if args.json:
        out.write(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    else:
        out.write(format_capacity(results, scenario, args.vm, sla))
    return 0


def _search(scenario, vm: str, policy: str, params: dict, sla: SLA, max_count: int, show: bool) -> Capacity:
    def shown(probe: Probe) -> None:
        if show:
            verdict = "fits" if probe.ok else f"does not fit ({probe.detail})"
            print(f"[{policy}] {probe.count} x {vm}: {verdict}", file=sys.stderr, flush=True)

    return capacity_search(scenario, vm, load_policy(policy), params, sla, max_count, on_probe=shown)


def one_line(results: Sequence[Capacity], scenario, vm: str, sla: SLA) -> str:
    return answer_line([r.as_dict() for r in results], scenario.host.memory_mb, vm, sla.max_slowdown)


CAPACITY_COLUMNS = (
    Column("", "policy", "<", lambda r: r.policy),
    Column("", "copies", ">", lambda r: str(r.count)),
    Column("", "limited by", "<", lambda r: r.limited_by),
    Column("worst", "slowdown", ">", lambda r: _ratio(r.worst_slowdown)),
    Column("", "probes", "<", lambda r: " ".join(f"{p.count}{'+' if p.ok else '-'}" for p in r.probes)),
    Column("", "not monotone at", "<", lambda r: ", ".join(map(str, r.non_monotone)) or "-"),
)


def format_capacity(results: Sequence[Capacity], scenario, vm: str, sla: SLA) -> str:
    copies = copies_of(scenario, vm)
    others = [v for v in scenario.vms if v not in copies]
    lines = [one_line(results, scenario, vm, sla), ""]
    lines += format_table(CAPACITY_COLUMNS, [[c.cell(r) for c in CAPACITY_COLUMNS] for r in results])
    lines += ["", f"probes: copies, + fits, - does not; every VM admitted, none blocked over "
                  f"{sla.max_blocked_fraction:.0%} of its time, worst slowdown <= {sla.max_slowdown:g}"
              + (f", fairness >= {sla.min_fairness:g}" if sla.min_fairness is not None else "")]
    if others:
        lines.append(f"beside the scenario's other VMs: {', '.join(v.name for v in others)} "
                     f"({_mb(sum(v.memory_mb for v in others))} MB configured)")
    return "\n".join(lines) + "\n"
