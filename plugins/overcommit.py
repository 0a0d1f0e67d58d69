"""``overcommit``: the seed's memory overcommit. The host does not trust the guest: no balloon, no
guest reports. It shares identical pages (content-based sharing), and when memory runs out it
pages guest memory to a host file, second-level paging, with victims it chooses blind (random by
default, as ESX does). Optionally it compresses victims first.

Every VM starts with its full configured memory; the host backs a page only when the guest touches
it, so VMs fit as long as what they touch fits, and beyond that the host pages.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.sdk import PAGES_PER_MB, Admission, Decisions, HostDecision, HostView, Policy, VMView


class OvercommitPolicy(Policy):
    name = "overcommit"
    version = "1.1.0"
    summary = "No trust in the guest: page sharing, then blind second-level paging (host swap)"

    class Params(Schema):
        share_scan_minutes = fields.Float(
            load_default=60.0, validate=validate.Range(min=0.0, max=600.0),
            metadata={"description": "time to scan all of a VM's memory for identical pages "
                                     "(ESX Mem.ShareScanTime, default 60); 0 turns sharing off"})
        inter_vm_sharing = fields.Boolean(
            load_default=True, metadata={"description": "share identical pages across VMs, not only within one"})
        victim = fields.String(
            load_default="random", validate=validate.OneOf(["random", "fifo", "clock"]),
            metadata={"description": "host-swap victim choice; random is ESX's, immune to the guest's own LRU"})
        compression = fields.Boolean(
            load_default=False, metadata={"description": "compress victims that fit in 2 KB before swapping"})
        compression_cache_pct = fields.Float(
            load_default=10.0, validate=validate.Range(min=0.0, max=100.0),
            metadata={"description": "per-VM compression cache cap, % of VM memory (ESX Mem.MemZipMaxPct)"})
        share_before_swap = fields.Boolean(
            load_default=True, metadata={"description": "share a victim whose content is already on a shared frame "
                                                          "instead of paging it (ESX, W02 4.3); needs sharing on"})
        max_overcommit = fields.Float(
            load_default=4.0, validate=validate.Range(min=1.0, max=100.0),
            metadata={"description": "refuse a VM that would take configured memory above this multiple of "
                                     "host memory"})

    def setup(self, host: HostView) -> HostDecision:
        return HostDecision(sharing_salted=not self.params["inter_vm_sharing"])

    def admit(self, host: HostView, vm: VMView, restart: bool) -> Admission:
        configured = sum(v.settings.memory_mb for v in host.running if v.name != vm.name) + vm.settings.memory_mb
        limit = self.params["max_overcommit"] * (host.memory_mb - host.reserve_mb)
        if configured > limit:
            return Admission(False, f"configured memory would reach {configured} MB, over {self.params['max_overcommit']:g}x "
                                    f"the host's {host.memory_mb - host.reserve_mb} MB")
        if host.free_mb < host.vm_overhead_mb:
            return Admission(False, f"no host memory left even for the VM's {host.vm_overhead_mb} MB overhead")
        return Admission(True, assigned_mb=vm.settings.memory_mb)

    def on_epoch(self, host: HostView) -> Decisions:
        p = self.params
        running = host.running
        decisions = Decisions(host=HostDecision(sharing_scan="random", sharing_pages_per_s=self._scan_rate(running)))
        configured = sum(v.settings.memory_mb for v in running) or 1
        for vm in running:
            d = decisions.vm(vm.name)
            d.host_swap = True
            d.victim = p["victim"]
            d.compression = p["compression"]
            d.compression_cache_pct = p["compression_cache_pct"]
            d.share_before_swap = p["share_before_swap"] and p["share_scan_minutes"] > 0
            # with nothing known about the guests, memory is short for everyone alike: each VM's
            # soft target is its configured share of the host
            d.host_target_mb = host.available_mb * vm.settings.memory_mb / configured
        return decisions

    def _scan_rate(self, running: tuple[VMView, ...]) -> float:
        minutes = self.params["share_scan_minutes"]
        if minutes <= 0 or not running:
            return 0.0
        mean_pages = sum(v.present_mb for v in running) / len(running) * PAGES_PER_MB
        return mean_pages / (minutes * 60.0)
