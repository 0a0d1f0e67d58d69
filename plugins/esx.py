"""``esx``: VMware ESX Server's memory management (Waldspurger, OSDI 2002, "W02", and later ESXi
defaults; see shared/REFERENCE.md section 1).

- Per VM: reservation (min), limit and shares. Power-on needs the reservation plus overhead.
- Idle memory tax: memory is revoked from the VM with the fewest shares per *adjusted* page,
  rho = S / (P * (f + k * (1 - f))), k = 1 / (1 - tax); tax 75% by default (W02 5.2).
- Active fraction f from sampling: 100 random pages per sample period, the maximum of a slow
  moving average, a fast one and the latest sample, so the estimate rises fast and decays slowly
  (W02 5.3).
- Free-memory states (W02 6.3, thresholds 6 / 4 / 2 / 1 % of host memory): high reclaims
  nothing; below 4% free, soft, it balloons (VMs with no balloon driver are paged); below 2%,
  hard, it also compresses and pages; below 1%, low, it also blocks VMs above their target.
  Targets aim to bring free memory back above 6%, and the state climbs back with hysteresis.
- Content-based page sharing scanning each VM in Mem.ShareScanTime (60 min), within a VM only
  unless inter-VM sharing is on (ShareForceSalting=2 is the default since 2015).
- Balloon at most Mem.CtlMaxPercent (65%) of a VM; compression cache Mem.MemZipMaxPct (10%);
  host swapping picks random victims (W02 3.3).
"""
from __future__ import annotations

from dataclasses import dataclass

from marshmallow import Schema, fields, validate, validates_schema, ValidationError

from service.sdk import PAGES_PER_MB, Admission, Decisions, HostDecision, HostView, Policy, VMView

STATES = ("high", "soft", "hard", "low")


@dataclass
class _Active:
    """One VM's active-memory estimate."""

    slow: float = 1.0       # before the first sample ends a VM counts as fully active
    fast: float = 1.0
    latest: float = 1.0
    sampled: bool = False

    def update(self, fraction: float, slow_gain: float, fast_gain: float) -> None:
        if not self.sampled:     # the averages start from the first measurement, not the guess
            self.slow = self.fast = fraction
            self.sampled = True
        self.slow += slow_gain * (fraction - self.slow)
        self.fast += fast_gain * (fraction - self.fast)
        self.latest = fraction

    @property
    def estimate(self) -> float:
        return max(self.slow, self.fast, self.latest)


@dataclass
class Claim:
    """What the allocation loop knows of one VM, in MB."""

    name: str
    shares: float
    minimum: float        # its reservation (min): never targeted below
    maximum: float        # its size, or its limit if lower
    demand: float         # memory it has touched and not given back of its own accord
    active: float         # sampled active fraction f


def min_funding_targets(claims: list[Claim], capacity: float, tax: float, step: float) -> dict[str, float]:
    """Each VM's target allocation (W02 5.1-5.2). Start from what each demands (within min and
    max). If that is more than ``capacity``, revoke ``step`` at a time from the VM paying the
    least per page, rho = S / (P * (f + k * (1 - f))) with k = 1 / (1 - tax), so idle pages cost
    k times more; never below min. If it is less, the rest is handed out by shares up to max, so
    that a growing VM has room before memory runs short."""
    k = 1.0 / (1.0 - tax)
    alloc = {c.name: min(max(c.demand, c.minimum), c.maximum) for c in claims}
    by_name = {c.name: c for c in claims}

    def rho(n: str) -> float:
        c = by_name[n]
        return c.shares / (max(alloc[n], 1e-9) * (c.active + k * (1.0 - c.active)))

    excess = sum(alloc.values()) - capacity
    while excess > 1e-9:
        candidates = [n for n in alloc if alloc[n] > by_name[n].minimum + 1e-9]
        if not candidates:
            break
        victim = min(candidates, key=lambda n: (rho(n), n))
        take = min(step, alloc[victim] - by_name[victim].minimum, excess)
        alloc[victim] -= take
        excess -= take
    spare = -excess
    while spare > 1e-9:
        open_ = [c for c in claims if alloc[c.name] < c.maximum - 1e-9]
        if not open_:
            break
        total = sum(max(c.shares, 1e-9) for c in open_)
        given = 0.0
        for c in open_:
            add = min(spare * max(c.shares, 1e-9) / total, c.maximum - alloc[c.name])
            alloc[c.name] += add
            given += add
        spare -= given
        if given <= 1e-9:
            break
    return alloc


class EsxPolicy(Policy):
    name = "esx"
    version = "1.1.0"
    summary = "VMware ESX: shares, idle memory tax, free-memory states, balloon, sharing, compression, host swap"

    class Params(Schema):
        idle_tax_pct = fields.Float(load_default=75.0, validate=validate.Range(min=0.0, max=99.0),
                                    metadata={"description": "Mem.IdleTax: idle memory tax rate"})
        sample_pages = fields.Integer(load_default=100, validate=validate.Range(min=1, max=10000),
                                      metadata={"description": "pages sampled per period for active memory (W02)"})
        sample_period_s = fields.Float(load_default=60.0, validate=validate.Range(min=1.0, max=3600.0),
                                       metadata={"description": "Mem.SamplePeriod"})
        slow_gain = fields.Float(load_default=0.125, validate=validate.Range(min=0.001, max=1.0),
                                 metadata={"description": "weight of a new sample in the slow moving average"})
        fast_gain = fields.Float(load_default=0.5, validate=validate.Range(min=0.001, max=1.0),
                                 metadata={"description": "weight of a new sample in the fast moving average"})
        balance_period_s = fields.Float(load_default=15.0, validate=validate.Range(min=1.0, max=3600.0),
                                        metadata={"description": "Mem.BalancePeriod: how often targets are recomputed"})
        high_pct = fields.Float(load_default=6.0, validate=validate.Range(min=0.0, max=50.0))
        soft_pct = fields.Float(load_default=4.0, validate=validate.Range(min=0.0, max=50.0))
        hard_pct = fields.Float(load_default=2.0, validate=validate.Range(min=0.0, max=50.0))
        low_pct = fields.Float(load_default=1.0, validate=validate.Range(min=0.0, max=50.0))
        hysteresis_pct = fields.Float(load_default=1.0, validate=validate.Range(min=0.0, max=10.0),
                                      metadata={"description": "free memory must clear a threshold by this much "
                                                               "(% of host) to return to a higher state"})
        ctl_max_pct = fields.Float(load_default=65.0, validate=validate.Range(min=0.0, max=100.0),
                                   metadata={"description": "Mem.CtlMaxPercent: largest balloon, % of VM memory"})
        balloon_rate_mb_s = fields.Float(load_default=256.0, validate=validate.Range(min=1.0, max=1e6),
                                         metadata={"description": "how fast a balloon driver inflates or deflates"})
        share_scan_minutes = fields.Float(load_default=60.0, validate=validate.Range(min=0.0, max=600.0),
                                          metadata={"description": "Mem.ShareScanTime; 0 turns sharing off"})
        inter_vm_sharing = fields.Boolean(load_default=False,
                                          metadata={"description": "ShareForceSalting=0; default off (salting 2)"})
        compression = fields.Boolean(load_default=True, metadata={"description": "Mem.MemZipEnable"})
        compression_cache_pct = fields.Float(load_default=10.0, validate=validate.Range(min=0.0, max=100.0),
                                             metadata={"description": "Mem.MemZipMaxPct"})
        balloon_deadband_pct = fields.Float(load_default=1.0, validate=validate.Range(min=0.0, max=50.0),
                                            metadata={"description": "balloon changes smaller than this "
                                                                     "(% of the VM's memory) are not made"})

        @validates_schema
        def ordered_thresholds(self, data, **_):
            if not data["high_pct"] >= data["soft_pct"] >= data["hard_pct"] >= data["low_pct"]:
                raise ValidationError("need high_pct >= soft_pct >= hard_pct >= low_pct", "high_pct")

    def __init__(self, **params):
        super().__init__(**params)
        self.active: dict[str, _Active] = {}
        self.last_sample: dict[str, float] = {}
        self.state = "high"
        self.targets: dict[str, float] = {}
        self.balloon: dict[str, float] = {}
        self.last_balance = -1e18

    # --- admission ---------------------------------------------------------------------------

    def admit(self, host: HostView, vm: VMView, restart: bool) -> Admission:
        # power-on reserves min + overhead (W02 6.1): the engine's admission control does the sum
        self.active[vm.name] = _Active()
        self.balloon[vm.name] = 0.0
        self.last_sample.pop(vm.name, None)
        return Admission(True, assigned_mb=vm.settings.memory_mb, guaranteed_mb=vm.settings.reservation_mb)

    def on_stop(self, host: HostView, vm: VMView) -> None:
        self.active.pop(vm.name, None)
        self.balloon.pop(vm.name, None)
        self.targets.pop(vm.name, None)

    # --- every epoch -------------------------------------------------------------------------

    def setup(self, host: HostView) -> HostDecision:
        return HostDecision(sharing_salted=not self.params["inter_vm_sharing"])

    def _free_state(self, host: HostView) -> str:
        """W02 6.3: below 4% free ESX balloons (soft), below 2% it pages (hard), below 1% it also
        blocks (low). It climbs back only with a margin: to high once free memory is back above
        6%, from hard and low once it clears their threshold by ``hysteresis_pct``."""
        p = self.params
        free_pct = 100.0 * host.free_mb / host.memory_mb
        if free_pct >= p["soft_pct"]:
            raw = "high"
        elif free_pct >= p["hard_pct"]:
            raw = "soft"
        elif free_pct >= p["low_pct"]:
            raw = "hard"
        else:
            raw = "low"
        state = self.state
        if STATES.index(raw) >= STATES.index(state):
            return raw
        leave = {"soft": p["high_pct"], "hard": p["hard_pct"] + p["hysteresis_pct"],
                 "low": p["low_pct"] + p["hysteresis_pct"]}
        while state != raw and free_pct >= leave[state]:
            state = STATES[STATES.index(state) - 1]
        return state

    def _sample(self, host: HostView, decisions: Decisions) -> None:
        period = self.params["sample_period_s"]
        for vm in host.running:
            last = self.last_sample.get(vm.name)
            if last is None or host.time_s - last >= period - 1e-9:
                if last is not None and vm.active_sample and vm.active_sample[1]:
                    touched, sampled = vm.active_sample
                    self.active.setdefault(vm.name, _Active()).update(touched / sampled, self.params["slow_gain"], self.params["fast_gain"])
                decisions.vm(vm.name).sample_pages = self.params["sample_pages"]
                decisions.vm(vm.name).sample_s = period
                self.last_sample[vm.name] = host.time_s

    @staticmethod
    def _demand_mb(vm: VMView) -> float:
        """Memory the guest has touched and not given back: what it holds, plus what the host
        took from it (balloon, host swap, compression), so that reclaiming a VM does not lower
        its claim."""
        return vm.resident_mb + vm.shared_mb + vm.compressed_mb + vm.host_swapped_mb + vm.balloon_mb

    def _compute_targets(self, host: HostView) -> None:
        capacity = host.available_mb - host.memory_mb * self.params["high_pct"] / 100.0
        claims = [Claim(vm.name, float(vm.settings.shares), float(vm.settings.reservation_mb),
                        float(min(vm.settings.memory_mb, vm.settings.limit_mb)), self._demand_mb(vm),
                        self.active.get(vm.name, _Active()).estimate)
                  for vm in host.running]
        self.targets = min_funding_targets(claims, max(capacity, 0.0), self.params["idle_tax_pct"] / 100.0,
                                           step=max(host.memory_mb / 1024.0, 1.0))

    def _squeeze_step(self, vm: VMView, target: float, rate: float, cap: float) -> float:
        """How much to keep from the VM this epoch: its balloon, or, for a VM without a balloon
        driver, the part of its memory a host limit keeps from it (ESX pages it instead, W02 6.3).
        Squeeze, in soft state and below, a VM above its target until it is left its target;
        release, when memory is plentiful again, a VM squeezed below its target. Both at a bounded
        rate, and not for changes smaller than ``balloon_deadband_pct`` of the VM, so that it
        settles instead of chasing noise."""
        p = self.params
        s = vm.settings
        current = self.balloon.get(vm.name, vm.balloon_mb if vm.balloon_driver else 0.0)
        leave = min(target, s.limit_mb)      # a VM over its limit is squeezed whatever the state
        wanted = min(max(vm.present_mb - leave, 0.0), cap)
        deadband = s.memory_mb * p["balloon_deadband_pct"] / 100.0
        over_limit = s.limit_mb < s.memory_mb and vm.present_mb - current > s.limit_mb + deadband
        over_target = vm.allocated_mb > target + deadband
        if wanted > current + deadband and (over_limit or (self.state != "high" and over_target)):
            return min(wanted, current + rate)
        if wanted < current - deadband and self.state == "high":
            return max(wanted, current - rate)
        return current

    def on_epoch(self, host: HostView) -> Decisions:
        p = self.params
        running = host.running
        scan = 0.0
        if p["share_scan_minutes"] > 0 and running:
            scan = sum(v.present_mb for v in running) / len(running) * PAGES_PER_MB / (p["share_scan_minutes"] * 60.0)
        new_state = self._free_state(host)
        worsened = STATES.index(new_state) > STATES.index(self.state)
        self.state = new_state
        # below the hard threshold the host pages VMs above their targets to keep memory free
        decisions = Decisions(host=HostDecision(sharing_pages_per_s=scan, sharing_scan="random", state=self.state,
                                                min_free_mb=host.memory_mb * p["hard_pct"] / 100.0))
        self._sample(host, decisions)
        if worsened or host.time_s - self.last_balance >= p["balance_period_s"] - 1e-9 or set(self.targets) != {v.name for v in running}:
            self._compute_targets(host)
            self.last_balance = host.time_s

        rate = p["balloon_rate_mb_s"] * host.epoch_s
        for vm in running:
            s = vm.settings
            d = decisions.vm(vm.name)
            d.host_swap = True
            d.victim = "random"
            d.share_before_swap = p["share_scan_minutes"] > 0   # W02 4.3; off with sharing off
            d.compression = p["compression"]
            d.compression_cache_pct = p["compression_cache_pct"]
            target = self.targets.get(vm.name, float(s.memory_mb))
            d.host_target_mb = target
            if vm.balloon_driver:
                step = self._squeeze_step(vm, target, rate, s.memory_mb * p["ctl_max_pct"] / 100.0)
                d.balloon_mb = step
                ballooned_off = max(0.0, step - vm.balloon_mb)
                if self.state in ("hard", "low"):
                    excess = vm.allocated_mb - target - ballooned_off
                    if excess > 0:
                        d.host_reclaim_mb = min(excess, vm.present_mb)
                if s.limit_mb < s.memory_mb:
                    d.host_limit_mb = s.limit_mb
            else:
                # no balloon: a host limit that follows the target the way a balloon would; it
                # caps private memory, so the shared frames the VM maps count apart
                step = self._squeeze_step(vm, target, rate, float(s.memory_mb))
                d.host_limit_mb = max(min(float(s.limit_mb), vm.present_mb - step - vm.shared_mb), 0.0)
            self.balloon[vm.name] = step
            d.blocked = self.state == "low" and vm.allocated_mb > target + 1.0
            d.metrics = {"active_pct": 100.0 * self.active.get(vm.name, _Active()).estimate,
                         "target_mb": target, "balloon_target_mb": step}
        return decisions
