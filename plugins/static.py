"""``static``: no overcommit. A VM gets its full configured memory when it starts, or it is
refused; the host never shares, balloons, compresses or swaps. The baseline every other policy is
compared against."""
from __future__ import annotations

from service.sdk import Admission, Decisions, HostView, Policy, VMView


class StaticPolicy(Policy):
    name = "static"
    version = "1.0.0"
    summary = "No overcommit: full configured memory at start, or refused"

    def admit(self, host: HostView, vm: VMView, restart: bool) -> Admission:
        committed = sum(v.present_mb for v in host.running if v.name != vm.name)
        free_for_vms = host.available_mb - host.vm_overhead_mb - committed
        need = vm.settings.memory_mb
        if need > free_for_vms:
            return Admission(False, f"needs {need} MB but only {max(free_for_vms, 0):.0f} MB of host memory is "
                                    f"left for VMs ({host.memory_mb} MB host, {host.reserve_mb} MB reserve, "
                                    f"{committed:.0f} MB given to running VMs, {host.vm_overhead_mb} MB overhead each)")
        return Admission(True, assigned_mb=need)

    def on_epoch(self, host: HostView) -> Decisions:
        decisions = Decisions()
        for vm in host.running:
            decisions.vm(vm.name).host_swap = False
        return decisions
