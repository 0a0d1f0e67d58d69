"""What a policy can see: the state a real host could know, one epoch at a time.

A policy that does not trust the guest (``Policy.trusts_guest = False``) gets ``VMView.guest =
None``: the guest's committed memory, free memory and paging are reports from a driver inside the
guest, and only a policy that trusts the guest receives them. No view carries page tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class MemorySettings:
    """The VM's configured memory settings, for every policy family, in MB."""

    memory_mb: int
    startup_mb: int
    minimum_mb: int
    maximum_mb: int
    buffer_pct: int
    weight: int
    reservation_mb: int
    limit_mb: int
    shares: int


@dataclass(frozen=True)
class GuestReport:
    """What a guest driver reports (Hyper-V's status message, virtio-balloon stats)."""

    committed_mb: float     # memory the guest has committed: touched and not freed, resident or paged
    free_mb: float          # guest-physical memory the guest is not using
    paged_mb: float         # held in the guest's own page file


@dataclass(frozen=True)
class VMView:
    name: str
    index: int
    state: str                    # "off", "running", "refused"
    settings: MemorySettings
    balloon_driver: bool
    boots: int                    # how many times it has started (restarts included)
    present_mb: float             # guest-physical memory the guest sees before ballooning
    balloon_mb: float             # held by the balloon driver
    resident_mb: float            # backed by private host RAM
    shared_mb: float              # mapped to shared host frames
    compressed_mb: float          # guest memory held in the compression cache (uncompressed size)
    compressed_size_mb: float     # what that takes of host memory (1 or 2 KB a page)
    host_swapped_mb: float        # in the host swap file (second-level paging)
    smart_paged_mb: float         # in the Smart Paging file
    refs: int                     # references done in the last epoch
    faults: dict[str, int]        # by kind, in the last epoch
    blocked: bool
    guaranteed_mb: float          # the engine keeps allocated_mb at least this (once reached)
    active_sample: Optional[tuple[int, int]] = None   # (touched, sampled) from the last epoch's sample
    guest: Optional[GuestReport] = None               # only for policies that trust the guest

    @property
    def host_backed_mb(self) -> float:
        """Private host memory this VM uses: RAM backing only its own pages (shared frames and the
        compression cache are counted apart)."""
        return self.resident_mb

    @property
    def allocated_mb(self) -> float:
        """Host memory the VM holds: private RAM, the shared frames it maps, its compression cache
        at compressed size, and its Smart Paging file (its own memory, backed on disk only through
        a restart). The engine's guarantee (``guaranteed_mb``) is a floor on this."""
        return self.resident_mb + self.shared_mb + self.compressed_size_mb + self.smart_paged_mb

    @property
    def visible_mb(self) -> float:
        """Memory the guest can use: present minus balloon."""
        return self.present_mb - self.balloon_mb


@dataclass(frozen=True)
class HostView:
    time_s: float
    epoch: int
    epoch_s: float
    memory_mb: int
    reserve_mb: int
    vm_overhead_mb: int
    available_mb: float           # for guest memory: memory - reserve - overhead of running VMs
    free_mb: float                # not backing anything
    shared_frames_mb: float       # host frames holding shared pages
    sharing_saved_mb: float       # guest memory mapped to shared frames minus the frames
    compression_cache_mb: float
    swap_used_mb: float
    smart_paging_mb: float
    swap_device: str
    seed: int = 0                 # the run's seed: a policy that draws random numbers seeds from it
    vms: tuple[VMView, ...] = field(default_factory=tuple)

    def vm(self, name: str) -> VMView:
        for v in self.vms:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def running(self) -> tuple[VMView, ...]:
        return tuple(v for v in self.vms if v.state == "running")
