"""What a policy returns. The engine validates every field and does the bookkeeping; a policy never
touches simulator state directly. ``None`` means "leave as it is"."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

VICTIM_STRATEGIES = ("random", "fifo", "clock", "plugin")
SCAN_ORDERS = ("random", "sequential")


@dataclass
class Admission:
    """The answer to a VM's start or restart."""

    admit: bool
    reason: str = ""
    assigned_mb: Optional[int] = None     # guest-physical memory it boots with (default: startup)
    smart_paging_mb: int = 0              # host paging file allowed to back part of it (restart only)
    populate: bool = False                # back all its memory with host memory at once (Hyper-V),
                                          # rather than page by page as the guest touches it
    guaranteed_mb: Optional[float] = None  # memory no reclaim path takes away (ESX min, Hyper-V
                                          # minimum); default the VM's reservation_mb


@dataclass
class VMDecision:
    assigned_mb: Optional[int] = None     # hot-add up to this (never shrinks: use the balloon)
    balloon_mb: Optional[float] = None    # balloon target; the guest gives free pages first
    host_limit_mb: Optional[float] = None  # hard cap on private host memory (ESX limit, cgroup memory.max):
                                          # above it the VM pages itself at host level even if memory is free
    host_target_mb: Optional[float] = None  # soft target: when host memory runs out, VMs furthest above
                                          # their targets give up pages first
    host_reclaim_mb: Optional[float] = None  # page out (or compress) this much of the VM now, in the background
    host_swap: Optional[bool] = None      # may the host page this VM's memory (second-level paging)
    victim: Optional[str] = None          # host-swap victim strategy: random, fifo, clock, plugin
    compression: Optional[bool] = None    # compress victims (<= 2 KB) before swapping them
    compression_cache_pct: Optional[float] = None   # cap of the VM's compression cache, % of its memory
    blocked: Optional[bool] = None        # the VM runs no references this epoch
    smart_paging_mb: Optional[int] = None # allowed size of its Smart Paging file
    sample_pages: Optional[int] = None    # start sampling this many random pages; the previous sample
                                          # ends now and its (touched, sampled) shows in the next view
    sample_s: Optional[float] = None      # with sample_pages: end the sample after this long, so that
                                          # the view at that epoch boundary already has its result
    report_free_pages: Optional[bool] = None  # free page reporting: the host drops the backing of guest-free pages
    populate: Optional[bool] = None       # keep all memory the guest can use backed by host memory
    share_before_swap: Optional[bool] = None  # a host-swap or compression victim whose content is
                                          # already on a shared frame is shared instead (ESX)
    metrics: dict[str, float] = field(default_factory=dict)  # the policy's own per-VM figures, kept in the series


@dataclass
class HostDecision:
    sharing_pages_per_s: Optional[float] = None   # content-based sharing scan rate, per VM
    sharing_scan: Optional[str] = None            # random (ESX) or sequential (KSM)
    sharing_salted: Optional[bool] = None         # share only within a VM (ESXi ShareForceSalting=2)
    state: Optional[str] = None                   # a label for the series, e.g. ESX "soft"
    min_free_mb: Optional[float] = None           # free memory the host keeps: below it a VM above its
                                                  # host_target_mb gives up a page for each one handed out


@dataclass
class Decisions:
    host: HostDecision = field(default_factory=HostDecision)
    vms: dict[str, VMDecision] = field(default_factory=dict)

    def vm(self, name: str) -> VMDecision:
        """The decision for ``name``, created on first use."""
        return self.vms.setdefault(name, VMDecision())
