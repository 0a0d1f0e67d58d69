"""``smart-paging``: Hyper-V 2012 Dynamic Memory plus Smart Paging.

Dynamic Memory as in ``dynamic-memory``, with one exception to "never page at host level": when a
VM *restarts* and its startup memory is more than the host has free plus what it can reclaim from
the other running VMs, the gap (at most startup minus minimum) is backed by a paging file on the
VM's Smart Paging device. After the boot the balancer balloons the VM down, and once its memory
has come down by the gap the file is released. A cold start, a running VM that needs more, or a
failover never uses it (shared/REFERENCE.md section 2, "Smart Paging").
"""
from __future__ import annotations

from marshmallow import fields, validate

from service.sdk import Admission, Decisions, HostView, VMView

from .dynamic_memory import DynamicMemoryPolicy


class SmartPagingPolicy(DynamicMemoryPolicy):
    name = "smart-paging"
    version = "1.1.0"
    summary = "Hyper-V 2012: Dynamic Memory, plus a host paging file only to get a VM through a restart"

    class Params(DynamicMemoryPolicy.Params):
        expected_max_s = fields.Float(load_default=600.0, validate=validate.Range(min=1.0, max=86400.0),
                                      metadata={"description": "Smart Paging is not expected to last longer than "
                                                               "this (Microsoft: 10 minutes); a file kept longer is "
                                                               "flagged in the series (smart_paging_overdue)"})

    def __init__(self, **params):
        super().__init__(**params)
        self.smart: dict[str, tuple[float, float]] = {}    # VM -> (gap MB, visible MB at boot)
        self.since: dict[str, float] = {}                   # VM -> when its file was created

    def admit(self, host: HostView, vm: VMView, restart: bool) -> Admission:
        startup = vm.settings.startup_mb
        room = self.pool_mb(host, vm.name) + self.reclaimable_mb(host, vm.name)
        self.smart.pop(vm.name, None)
        if startup <= room:
            return Admission(True, assigned_mb=startup, populate=True, guaranteed_mb=vm.settings.minimum_mb)
        if restart and room >= vm.settings.minimum_mb:
            gap = min(startup - room, startup - vm.settings.minimum_mb)
            self.smart[vm.name] = (float(gap), float(startup))
            self.since[vm.name] = host.time_s
            return Admission(True, assigned_mb=startup, smart_paging_mb=int(gap + 0.999), populate=True,
                             guaranteed_mb=vm.settings.minimum_mb)
        return Admission(False, f"needs {startup} MB startup memory; {room:.0f} MB is free or reclaimable"
                                + ("" if restart else " (Smart Paging serves restarts only)"))

    def on_stop(self, host: HostView, vm: VMView) -> None:
        self.smart.pop(vm.name, None)
        self.since.pop(vm.name, None)

    def on_epoch(self, host: HostView) -> Decisions:
        decisions = super().on_epoch(host)
        for vm in host.running:
            if vm.name not in self.smart:
                continue
            gap, at_boot = self.smart[vm.name]
            d = decisions.vm(vm.name)
            if vm.visible_mb <= at_boot - gap + 1e-6:
                # ballooned down by the gap: what the file held is no longer needed
                d.smart_paging_mb = 0
                if vm.smart_paged_mb == 0:
                    del self.smart[vm.name]
                    self.since.pop(vm.name, None)
            age = host.time_s - self.since.get(vm.name, host.time_s)
            d.metrics = {**d.metrics, "smart_paging_gap_mb": gap, "smart_paging_s": age,
                         "smart_paging_overdue": float(age > self.params["expected_max_s"])}
        return decisions
