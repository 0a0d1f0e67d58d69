"""``fair-balloon``: an example third-party vmemlab policy.

When the host runs short of free memory, every running VM with a balloon driver is ballooned
toward an equal share of the memory the host has for VMs, but never below a floor. A VM without a
balloon driver is held to the same share by a host limit, paged at host level (CLOCK victims). When
memory is plentiful again, balloons deflate in the guests that report they are short of memory,
which is why the policy trusts the guest. It never shares pages or compresses them.

Unlike Dynamic Memory, which sizes each VM by its demand and weight, fair-balloon ignores demand
under pressure: a VM with a large working set gets the same share as an idle one.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.sdk import Decisions, HostDecision, HostView, Policy, VMView

__version__ = "0.1.0"


class FairBalloonPolicy(Policy):
    name = "fair-balloon"
    version = __version__
    trusts_guest = True
    summary = "Balloons every VM toward an equal share of host memory under pressure, never below a floor"

    class Params(Schema):
        free_threshold_pct = fields.Float(
            load_default=10.0, validate=validate.Range(min=1, max=50),
            metadata={"description": "host free memory, in % of host memory, below which VMs are ballooned"})
        floor_mb = fields.Integer(
            load_default=256, validate=validate.Range(min=0, max=1048576),
            metadata={"description": "no VM is ballooned below this much visible memory (MB)"})

    def __init__(self, free_threshold_pct: float = 10.0, floor_mb: int = 256):
        super().__init__(free_threshold_pct=free_threshold_pct, floor_mb=floor_mb)
        self.free_threshold_pct = free_threshold_pct
        self.floor_mb = floor_mb

    def on_epoch(self, host: HostView) -> Decisions:
        threshold_mb = self.free_threshold_pct / 100.0 * host.memory_mb
        if host.running and host.free_mb < threshold_mb:
            return self._squeeze(host)
        if host.free_mb > 2 * threshold_mb:
            return self._release(host, threshold_mb)
        return Decisions(host=HostDecision(state="steady"))

    def _squeeze(self, host: HostView) -> Decisions:
        """Pressure: every VM keeps at most an equal share (but at least the floor) of memory."""
        decisions = Decisions(host=HostDecision(state="pressure"))
        share_mb = max(host.available_mb / len(host.running), float(self.floor_mb))
        for vm in host.running:
            decision = decisions.vm(vm.name)
            decision.metrics["fair_share_mb"] = share_mb
            if vm.balloon_driver:
                wanted = max(vm.present_mb - share_mb, 0.0)
                decision.balloon_mb = max(vm.balloon_mb, wanted)      # only inflate under pressure
            else:                                                      # no driver: the host pages it
                decision.host_limit_mb = min(share_mb, _largest_mb(vm))
                decision.host_swap = True
                decision.victim = "clock"
        return decisions

    def _release(self, host: HostView, threshold_mb: float) -> Decisions:
        """Plenty: lift host limits, and hand memory above 1.5x the threshold back to the guests
        that report they are short of it."""
        decisions = Decisions(host=HostDecision(state="steady"))
        for vm in host.running:
            if not vm.balloon_driver:
                decisions.vm(vm.name).host_limit_mb = _largest_mb(vm)
        needy = [vm for vm in host.running if vm.balloon_mb > 0 and vm.guest is not None
                 and vm.guest.free_mb < self.free_threshold_pct / 100.0 * vm.visible_mb]
        if needy:
            decisions.host.state = "release"
            each_mb = (host.free_mb - 1.5 * threshold_mb) / len(needy)
            for vm in needy:
                decisions.vm(vm.name).balloon_mb = max(vm.balloon_mb - each_mb, 0.0)
        return decisions


def _largest_mb(vm: VMView) -> int:
    """The most guest-physical memory the VM can ever have: a host limit at this is no limit."""
    s = vm.settings
    return max(s.memory_mb, s.maximum_mb, s.startup_mb)
