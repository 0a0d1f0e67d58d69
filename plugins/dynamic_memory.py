"""``dynamic-memory``: Hyper-V Dynamic Memory (Windows Server 2008 R2 SP1 and later; see
shared/REFERENCE.md section 2).

The host trusts the guest. A driver in the guest reports its committed memory every second; the
balancer gives each VM committed * (1 + buffer) within [minimum, maximum], hot-adding from the
free pool and removing by balloon. Memory is taken from a VM only when another one needs it, lower
weight first. When memory is short, the buffer goes first, then weight decides who is squeezed
below its need; a squeezed guest pages to its own page file. The host never pages guest memory
(no second-level paging).

Pressure, as Hyper-V's counter has it, is committed / assigned * 100; with a 20% buffer the
balancer aims at 100 / 1.2 = 83.
"""
from __future__ import annotations

from dataclasses import dataclass

from marshmallow import Schema, fields, validate

from service.sdk import Admission, Decisions, HostDecision, HostView, Policy, VMView


@dataclass
class Claim:
    name: str
    weight: float
    minimum: float
    maximum: float
    committed: float
    buffer: float
    visible: float


def _fill(alloc: dict[str, float], claims: list[Claim], goal: dict[str, float], budget: float) -> float:
    """Raise allocations toward ``goal``, higher weight first; VMs of equal weight share in
    proportion to what they still lack. Returns the budget left."""
    for weight in sorted({c.weight for c in claims}, reverse=True):
        group = [c for c in claims if c.weight == weight]
        lack = {c.name: max(0.0, goal[c.name] - alloc[c.name]) for c in group}
        total = sum(lack.values())
        if total <= 0:
            continue
        share = min(1.0, budget / total)
        for c in group:
            alloc[c.name] += lack[c.name] * share
        budget -= total * share
        if budget <= 1e-9:
            return 0.0
    return budget


def balance(claims: list[Claim], available: float) -> dict[str, float]:
    """How much memory each VM should see. Minimums first, then what the guests have committed,
    then their buffers; a VM keeps memory it already has beyond that while nobody else needs it."""
    alloc = {c.name: c.minimum for c in claims}
    budget = available - sum(alloc.values())
    if budget < 0:
        return alloc
    need = {c.name: min(max(c.committed, c.minimum), c.maximum) for c in claims}
    budget = _fill(alloc, claims, need, budget)
    with_buffer = {c.name: min(max(c.committed * (1.0 + c.buffer / 100.0), c.minimum), c.maximum) for c in claims}
    budget = _fill(alloc, claims, with_buffer, budget)
    keep = {c.name: max(alloc[c.name], min(c.visible, c.maximum)) for c in claims}
    _fill(alloc, claims, keep, budget)
    return alloc


class DynamicMemoryPolicy(Policy):
    name = "dynamic-memory"
    version = "1.1.0"
    trusts_guest = True
    summary = "Hyper-V Dynamic Memory: hot-add and balloon by guest-reported pressure; never host paging"

    class Params(Schema):
        balance_interval_s = fields.Float(load_default=1.0, validate=validate.Range(min=0.1, max=60.0),
                                          metadata={"description": "how often the balancer acts (Hyper-V: 1 s)"})
        removal_delay_s = fields.Float(load_default=0.0, validate=validate.Range(min=0.0, max=3600.0),
                                       metadata={"description": "memory a VM no longer needs is removed only after "
                                                                "this long (not documented by Microsoft)"})
        balloon_rate_mb_s = fields.Float(load_default=512.0, validate=validate.Range(min=1.0, max=1e6),
                                         metadata={"description": "how fast the balloon removes memory from a guest"})

    def __init__(self, **params):
        super().__init__(**params)
        self.last_balance = -1e18
        self.surplus_since: dict[str, float] = {}

    def setup(self, host: HostView) -> HostDecision:
        return HostDecision(sharing_pages_per_s=0.0)

    # --- admission ---------------------------------------------------------------------------

    def reclaimable_mb(self, host: HostView, excluding: str) -> float:
        """Memory the balancer could take back from running VMs for a VM that starts: what each
        sees beyond its committed memory plus buffer (and beyond its minimum)."""
        total = 0.0
        for v in host.running:
            if v.name == excluding or v.guest is None:
                continue
            keep = max(v.settings.minimum_mb, v.guest.committed_mb * (1.0 + v.settings.buffer_pct / 100.0))
            total += max(0.0, v.visible_mb - keep)
        return total

    def pool_mb(self, host: HostView, excluding: str) -> float:
        """Memory no running VM has been given: the balancer's free pool."""
        given = sum(v.visible_mb for v in host.running if v.name != excluding)
        return max(0.0, host.available_mb - host.vm_overhead_mb - given)

    def admit(self, host: HostView, vm: VMView, restart: bool) -> Admission:
        startup = vm.settings.startup_mb
        room = self.pool_mb(host, vm.name) + self.reclaimable_mb(host, vm.name)
        if startup > room:
            return Admission(False, f"needs {startup} MB startup memory; {room:.0f} MB is free or reclaimable")
        # Hyper-V backs all assigned memory, and never takes a VM below its minimum
        return Admission(True, assigned_mb=startup, populate=True, guaranteed_mb=vm.settings.minimum_mb)

    # --- every epoch -------------------------------------------------------------------------

    def claims(self, host: HostView) -> list[Claim]:
        out = []
        for v in host.running:
            s = v.settings
            committed = v.guest.committed_mb if v.guest is not None else v.visible_mb
            if not v.balloon_driver:
                # no Dynamic Memory driver in the guest (no integration services yet): Hyper-V can
                # neither hot-add nor balloon, so the VM keeps what it has
                out.append(Claim(v.name, float(s.weight), v.visible_mb, v.visible_mb, v.visible_mb,
                                 float(s.buffer_pct), v.visible_mb))
                continue
            out.append(Claim(v.name, float(s.weight), float(s.minimum_mb), float(s.maximum_mb), committed,
                             float(s.buffer_pct), v.visible_mb))
        return out

    def on_epoch(self, host: HostView) -> Decisions:
        decisions = Decisions(host=HostDecision(sharing_pages_per_s=0.0))
        if host.time_s - self.last_balance < self.params["balance_interval_s"] - 1e-9:
            return decisions        # host_swap and populate are standing settings: nothing to repeat
        self.last_balance = host.time_s
        claims = self.claims(host)
        goal = balance(claims, host.available_mb)
        rate = self.params["balloon_rate_mb_s"] * self.params["balance_interval_s"]
        seen = {v.name: v.visible_mb for v in host.running}
        # removals first, so that additions hand out only memory that is really free
        for v in host.running:
            d = decisions.vm(v.name)
            d.host_swap = False
            want = goal[v.name]
            if want < v.visible_mb - 1e-6 and v.balloon_driver:
                since = self.surplus_since.setdefault(v.name, host.time_s)
                squeezed = v.guest is not None and want < v.guest.committed_mb * (1 + v.settings.buffer_pct / 100.0)
                if squeezed or host.time_s - since >= self.params["removal_delay_s"]:
                    take = min(v.visible_mb - want, rate)
                    d.balloon_mb = min(v.balloon_mb + take, v.present_mb)
                    seen[v.name] = v.visible_mb - take
            else:
                self.surplus_since.pop(v.name, None)
        pool = max(0.0, host.available_mb - sum(seen.values()))
        for v in sorted(host.running, key=lambda v: (-v.settings.weight, v.index)):
            grow = min(goal[v.name] - v.visible_mb, pool)
            if grow <= 1e-6 or not v.balloon_driver:
                continue
            pool -= grow
            d = decisions.vm(v.name)
            deflate = min(grow, v.balloon_mb)
            if deflate > 0:
                d.balloon_mb = v.balloon_mb - deflate
            hot_add = grow - deflate
            if hot_add > 1e-6:
                d.assigned_mb = min(v.present_mb + hot_add, v.settings.maximum_mb)
            seen[v.name] = v.visible_mb + grow
        for v in host.running:
            committed = v.guest.committed_mb if v.guest is not None else 0.0
            decisions.vm(v.name).metrics = {"pressure": 100.0 * committed / max(seen[v.name], 1e-9),
                                            "goal_mb": goal[v.name]}
        return decisions
