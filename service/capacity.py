"""Capacity search: how many copies of one VM a host runs under a policy, within an SLA.

A probe runs the scenario with ``n`` copies of the VM (the scenario's other VMs stay as they are)
and passes if every VM is admitted, none waits blocked for more than ``max_blocked_fraction`` of
its running time, every VM's slowdown is at most ``max_slowdown`` (and the fairness at least
``min_fairness``, when given). The search brackets the answer by doubling from one copy, then
bisects; it ends holding a passing probe at ``count`` and a failing one at ``count + 1`` (or the
bound), and the failing probe says what limits the capacity. One more probe, at ``count + 2``,
checks that the results are monotone: a pass there is reported, not hidden.

No Flask, Celery or database here: the CLI runs probes in this process, the service on workers.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .answers import host_size
from .engine import Scenario, simulate
from .scenario import replicate

LIMITS = ("refused", "blocked", "sla", "bound")


@dataclass(frozen=True)
class SLA:
    max_slowdown: float
    min_fairness: Optional[float] = None
    max_blocked_fraction: float = 0.05


@dataclass
class Probe:
    count: int
    ok: bool
    worst_slowdown: Optional[float]
    reason: str = ""                  # why it failed: refused, blocked or sla; "" if it passed
    detail: str = ""
    run: Optional[int] = None         # the stored run, where the service made one


@dataclass
class Capacity:
    policy: str
    count: int                        # copies of the VM that fit
    limited_by: str                   # refused, blocked, sla, or bound (the search's upper bound)
    worst_slowdown: Optional[float]   # at ``count``
    probes: list[Probe] = field(default_factory=list)
    non_monotone: list[int] = field(default_factory=list)   # passing counts above a failing one

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def with_copies(scenario: Scenario, vm_name: str, count: int) -> Scenario:
    """``scenario`` with the VM ``vm_name`` (or the copies NAME-1.. a ``count`` entry made of it)
    replaced by ``count`` copies of it, in its place, started as far apart as its copies were; the
    other VMs unchanged. ValueError if there is no such VM or a copy would start after the run."""
    copies = copies_of(scenario, vm_name)
    if not copies:
        names = ", ".join(vm.name for vm in scenario.vms)
        raise ValueError(f"no VM named {vm_name!r} in the scenario (VMs: {names})")
    first = scenario.vms.index(copies[0])
    others_after = tuple(vm for vm in scenario.vms[first:] if vm not in copies)
    made = replicate(dataclasses.replace(copies[0], name=vm_name), count, stagger_of(copies))
    late = [vm.name for vm in made if any(ev.at_s > scenario.duration_s for ev in vm.events)]
    if late:
        raise ValueError(f"{count} copies of {vm_name!r} do not all start within the run ({scenario.duration_s:g} s)")
    return dataclasses.replace(scenario, vms=scenario.vms[:first] + made + others_after)


def stagger_of(copies: list) -> float:
    """How far apart the scenario starts the copies of a replicated VM (0 for a single VM)."""
    if len(copies) > 1 and copies[0].events and copies[1].events:
        return copies[1].events[0].at_s - copies[0].events[0].at_s
    return 0.0


def startable(scenario: Scenario, vm_name: str) -> Optional[int]:
    """The most copies of the VM that start within the run, or None if there is no such limit."""
    copies = copies_of(scenario, vm_name)
    stagger = stagger_of(copies) if copies else 0.0
    if stagger <= 0 or not copies[0].events:
        return None
    last_start = max(ev.at_s for ev in copies[0].events)
    return int((scenario.duration_s - last_start) // stagger) + 1


def judge(summary: dict[str, Any], count: int, sla: SLA) -> Probe:
    """Did the run with ``count`` copies pass the SLA? The first reason it did not."""
    vms = summary.get("vms", [])
    ran = [vm for vm in vms if vm.get("state") != "refused"]
    slowdowns = [vm["slowdown"] for vm in ran if vm.get("slowdown") is not None]
    worst = max(slowdowns) if slowdowns else None
    refused = [vm["name"] for vm in vms if vm.get("state") == "refused"]
    if refused:
        return Probe(count, False, worst, "refused", f"refused: {', '.join(refused[:5])}")
    blocked = [vm["name"] for vm in ran
               if vm.get("running_s") and vm.get("blocked_s", 0.0) > sla.max_blocked_fraction * vm["running_s"]]
    if blocked:
        return Probe(count, False, worst, "blocked", f"blocked too long: {', '.join(blocked[:5])}")
    out_of_memory = [vm["name"] for vm in ran if vm.get("state") == "oom"]
    if out_of_memory:
        return Probe(count, False, worst, "sla", f"guest page file full: {', '.join(out_of_memory[:5])}")
    if worst is not None and worst > sla.max_slowdown:
        return Probe(count, False, worst, "sla", f"worst slowdown {worst:.3f} > {sla.max_slowdown:g}")
    fairness = summary.get("fairness")
    if sla.min_fairness is not None and fairness is not None and fairness < sla.min_fairness:
        return Probe(count, False, worst, "sla", f"fairness {fairness:.3f} < {sla.min_fairness:g}")
    return Probe(count, True, worst)


def next_count(probes: dict[int, Probe], max_count: int) -> Optional[int]:
    """The next count to probe, given the probes made so far, or None when the search is over.
    A function of the probes alone, so that a search driven by stored runs (the service) and one
    in this process take the same path: doubling from one copy until a failure or the bound, then
    bisection, then one probe past the first failure to check monotonicity."""
    if max_count < 1:
        raise ValueError("max_count must be at least 1")
    lo, hi, n = 0, None, 1
    while True:
        if n not in probes:
            return n
        if not probes[n].ok:
            hi = n
            break
        lo = n
        if n == max_count:
            return None
        n = min(2 * n, max_count)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid not in probes:
            return mid
        if probes[mid].ok:
            lo = mid
        else:
            hi = mid
    if hi + 1 <= max_count and hi + 1 not in probes:
        return hi + 1                  # a pass above a failure: the results are not monotone
    return None


def conclude(probes: dict[int, Probe], max_count: int, policy: str = "") -> Capacity:
    """The capacity the probes of a finished search show (see ``next_count``)."""
    lo, hi, n = 0, None, 1
    while n in probes and probes[n].ok and n < max_count:
        lo, n = n, min(2 * n, max_count)
    if n in probes and probes[n].ok:
        lo = n
    elif n in probes:
        hi = n
        while hi - lo > 1 and (lo + hi) // 2 in probes:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if probes[mid].ok else (lo, mid)
    ordered = [probes[k] for k in sorted(probes)]
    first_failure = min((p.count for p in ordered if not p.ok), default=math.inf)
    non_monotone = [p.count for p in ordered if p.ok and p.count > first_failure]
    limited_by = "bound" if hi is None else probes[hi].reason
    worst = probes[lo].worst_slowdown if lo in probes else None
    return Capacity(policy, lo, limited_by, worst, ordered, non_monotone)


def search(probe: Callable[[int], Probe], max_count: int, policy: str = "") -> Capacity:
    """The largest count that passes, probing as few counts as doubling and bisection need."""
    probes: dict[int, Probe] = {}
    while (n := next_count(probes, max_count)) is not None:
        probes[n] = probe(n)
    return conclude(probes, max_count, policy)


def capacity_search(scenario: Scenario, vm_name: str, policy_cls: Any, params: dict, sla: SLA, max_count: int,
                    on_probe: Optional[Callable[[Probe], None]] = None) -> Capacity:
    """Run the search in this process: each probe is one simulation. The bound is also the most
    copies that start within the run when the scenario staggers them."""
    with_copies(scenario, vm_name, 1)              # a bad VM name fails before any run
    limit = startable(scenario, vm_name)
    max_count = max_count if limit is None else min(max_count, limit)
    trusts_guest = bool(policy_cls.trusts_guest)     # as loaded, before any constructor ran

    def probe(n: int) -> Probe:
        policy = policy_cls.create(params)
        summary = simulate(with_copies(scenario, vm_name, n), policy, trusts_guest=trusts_guest).summary
        result = judge(summary, n, sla)
        if on_probe is not None:
            on_probe(result)
        return result

    return search(probe, max_count, policy_cls.name)


def copies_of(scenario: Scenario, vm_name: str) -> list:
    """The VM named ``vm_name``, or the copies NAME-1.. a ``count`` entry made of it."""
    prefix = f"{vm_name}-"
    return [vm for vm in scenario.vms
            if vm.name == vm_name or (vm.name.startswith(prefix) and vm.name[len(prefix):].isdigit())]


def answer_line(results: list[dict[str, Any]], host_memory_mb: float, vm_name: str, max_slowdown: float) -> str:
    """The answer in words and figures, against static where it ran: ``results`` are per policy
    ``{"policy", "count", "limited_by", "status"}`` (a Capacity's ``as_dict`` will do)."""
    base = next((r["count"] for r in results if r["policy"] == "static" and r.get("count")), None)
    parts = []
    for r in results:
        if r.get("count") is None:
            parts.append(f"{r['policy']} {r.get('status', 'unknown')}")
            continue
        text = f"{r['policy']} {r['count']}"
        if base and r["policy"] != "static":
            text += f" ({(r['count'] / base - 1) * 100:+.0f}%)"
        if r.get("limited_by") == "bound":
            text += " (the bound)"
        parts.append(text)
    return (f"On this {host_size(host_memory_mb)} host at <= {max_slowdown:g}x slowdown, copies of {vm_name} "
            f"that fit: {', '.join(parts)}.")
