"""``kvm``: a KVM/Linux host (shared/REFERENCE.md section 3).

- KSM merges identical pages, scanning ``pages_to_scan`` pages every ``sleep_millisecs`` across
  the whole host (defaults 100 and 20: at most 5,000 pages/s), in order.
- virtio-balloon driven as oVirt MOM's auto-balloon rules do: while host free memory is below
  ``pressure_threshold`` (20%), shrink each guest by at most ``max_balloon_change_pct`` (5%) of
  its memory per cycle but keep ``min_guest_free_pct`` (20%) of it free in the guest; below
  ``pressure_critical`` (5%) shrink regardless, forcing guests to swap; otherwise grow them back.
  The balloon's guest statistics are what the host trusts of the guest.
- Free page reporting: the guest reports free pages and the host drops their backing.
- The host swaps guest memory like any process's (second-level paging), choosing victims from
  its LRU lists, which see accessed bits (modelled as CLOCK); an optional per-VM hard limit is
  cgroup ``memory.max`` / libvirt ``hard_limit``.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.sdk import Admission, Decisions, HostDecision, HostView, Policy, VMView


class KvmPolicy(Policy):
    name = "kvm"
    version = "1.0.0"
    trusts_guest = True
    summary = "KVM: KSM page merging, MOM-style virtio-balloon, free page reporting, host swap with LRU victims"

    class Params(Schema):
        ksm = fields.Boolean(load_default=True, metadata={"description": "run KSM"})
        pages_to_scan = fields.Integer(load_default=100, validate=validate.Range(min=0, max=100000),
                                       metadata={"description": "KSM pages scanned per wake-up"})
        sleep_millisecs = fields.Integer(load_default=20, validate=validate.Range(min=1, max=60000),
                                         metadata={"description": "KSM sleep between scans"})
        balloon = fields.Boolean(load_default=True, metadata={"description": "MOM auto-balloon"})
        balloon_interval_s = fields.Float(load_default=10.0, validate=validate.Range(min=1.0, max=3600.0),
                                          metadata={"description": "MOM policy cycle"})
        pressure_threshold = fields.Float(load_default=0.20, validate=validate.Range(min=0.0, max=1.0))
        pressure_critical = fields.Float(load_default=0.05, validate=validate.Range(min=0.0, max=1.0))
        min_guest_free_pct = fields.Float(load_default=20.0, validate=validate.Range(min=0.0, max=100.0))
        max_balloon_change_pct = fields.Float(load_default=5.0, validate=validate.Range(min=0.0, max=100.0))
        min_balloon_change_pct = fields.Float(load_default=0.25, validate=validate.Range(min=0.0, max=100.0))
        free_page_reporting = fields.Boolean(load_default=True)
        host_swap = fields.Boolean(load_default=True, metadata={"description": "let the host swap guest memory"})
        hard_limit_pct = fields.Float(load_default=100.0, validate=validate.Range(min=1.0, max=100.0),
                                      metadata={"description": "cgroup memory.max per VM, % of its memory"})
        max_overcommit = fields.Float(load_default=4.0, validate=validate.Range(min=1.0, max=100.0))

    def __init__(self, **params):
        super().__init__(**params)
        self.last_cycle = -1e18

    def setup(self, host: HostView) -> HostDecision:
        return HostDecision(sharing_salted=False)

    def admit(self, host: HostView, vm: VMView, restart: bool) -> Admission:
        configured = sum(v.settings.memory_mb for v in host.running if v.name != vm.name) + vm.settings.memory_mb
        limit = self.params["max_overcommit"] * (host.memory_mb - host.reserve_mb)
        if configured > limit:
            return Admission(False, f"configured memory would reach {configured} MB, over "
                                    f"{self.params['max_overcommit']:g}x the host")
        return Admission(True, assigned_mb=vm.settings.memory_mb)

    def on_epoch(self, host: HostView) -> Decisions:
        p = self.params
        running = host.running
        scan = 0.0
        if p["ksm"] and running:
            # KSM's budget is host-wide; the engine's rate is per VM
            scan = p["pages_to_scan"] * 1000.0 / p["sleep_millisecs"] / len(running)
        decisions = Decisions(host=HostDecision(sharing_pages_per_s=scan, sharing_scan="sequential"))
        cycle = host.time_s - self.last_cycle >= p["balloon_interval_s"] - 1e-9
        if cycle:
            self.last_cycle = host.time_s
        free_frac = host.free_mb / host.memory_mb
        configured = sum(v.settings.memory_mb for v in running) or 1
        for vm in running:
            d = decisions.vm(vm.name)
            d.host_swap = p["host_swap"]
            d.victim = "clock"
            d.report_free_pages = p["free_page_reporting"]
            d.host_target_mb = host.available_mb * vm.settings.memory_mb / configured
            if p["hard_limit_pct"] < 100.0:
                d.host_limit_mb = vm.settings.memory_mb * p["hard_limit_pct"] / 100.0
            if p["balloon"] and vm.balloon_driver and cycle and vm.guest is not None:
                target = self._balloon_target(vm, free_frac)
                if target is not None:
                    d.balloon_mb = target
        return decisions

    def _balloon_target(self, vm: VMView, host_free_frac: float) -> float | None:
        """oVirt MOM balloon.rules, one cycle."""
        p = self.params
        size = vm.settings.memory_mb
        max_change = size * p["max_balloon_change_pct"] / 100.0
        min_change = size * p["min_balloon_change_pct"] / 100.0
        if host_free_frac < p["pressure_threshold"]:
            if host_free_frac < p["pressure_critical"]:
                shrink = max_change
            else:
                keep_free = size * p["min_guest_free_pct"] / 100.0
                shrink = min(max_change, max(0.0, vm.guest.free_mb - keep_free))
            if shrink < min_change:
                return None
            return min(vm.balloon_mb + shrink, vm.present_mb * 0.9)
        grow = min(max_change, vm.balloon_mb)
        if grow < min_change:
            return None if vm.balloon_mb == 0 else 0.0
        return vm.balloon_mb - grow
