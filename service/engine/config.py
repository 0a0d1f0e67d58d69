"""The simulation's inputs: a host, its devices, VMs with workloads and lifecycle events.

Plain frozen dataclasses, sizes in MB and times in seconds as a user writes them; the engine
converts to 4 KiB pages and nanoseconds. Validation of user input happens in
``service.scenario`` (marshmallow); ``Scenario.check()`` enforces the cross-field rules the engine
relies on, so a scenario built in code is held to the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

PAGE_SIZE = 4096
PAGES_PER_MB = 1024 * 1024 // PAGE_SIZE


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; ``where`` names the field, e.g. ``vms[1].memory_mb``."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True)
class Device:
    """A storage device with per-4 KiB-page latencies. ``parallelism`` is its queue depth: up to
    that many I/Os overlap, further ones queue behind them."""

    read_us: float
    write_us: float
    parallelism: int = 1


# Typical 4 KiB random-I/O latencies (vendor datasheet orders of magnitude, not measurements):
# a 7,200 rpm disk seeks for ~8 ms; a SATA SSD reads in ~100 us; an NVMe drive in ~20 us.
DEVICE_PRESETS: dict[str, Device] = {
    "hdd": Device(read_us=8000.0, write_us=8000.0, parallelism=1),
    "ssd": Device(read_us=100.0, write_us=60.0, parallelism=8),
    "nvme": Device(read_us=20.0, write_us=20.0, parallelism=32),
}


@dataclass(frozen=True)
class Costs:
    """CPU costs of the events that need no device, in microseconds."""

    guest_fault_us: float = 1.0      # the guest kernel maps and zeroes a page on first touch
    zero_fill_us: float = 2.0        # the host backs a never-backed guest frame (exit + zeroing)
    cow_break_us: float = 3.0        # copy a shared page on write
    compress_us: float = 10.0        # compress a page into the compression cache
    decompress_us: float = 10.0      # fault it back in


@dataclass(frozen=True)
class Host:
    memory_mb: int
    reserve_mb: int = 0               # kept for the host itself, never given to VMs
    vm_overhead_mb: int = 32          # per running VM (W02 section 6.1: typical 32 MB)
    swap_device: str = "ssd"          # second-level paging location
    devices: dict[str, Device] = field(default_factory=dict)
    costs: Costs = field(default_factory=Costs)

    def device(self, name: str) -> Device:
        if name in self.devices:
            return self.devices[name]
        return DEVICE_PRESETS[name]

    def device_names(self) -> list[str]:
        return sorted(set(DEVICE_PRESETS) | set(self.devices))


PHASE_KINDS = ("idle", "uniform", "zipf", "hotcold", "scan", "trace")
REPLACEMENTS = ("lru", "clock", "fifo")
# load_balloon_driver: the guest gets its balloon driver then (VMware Tools installed, the Linux
# driver loaded late); before the first such event it has none, whatever ``balloon_driver`` says
EVENT_ACTIONS = ("start", "stop", "restart", "load_balloon_driver")


@dataclass(frozen=True)
class ContentMix:
    """What a phase's pages hold, as fractions: zero pages, pages identical to a page of the VM's OS
    image (shareable across VMs of the same image), the rest unique. ``compressible`` is the
    fraction of unique pages that compress to 2 KB or less."""

    zero: float = 0.05
    shared: float = 0.05
    compressible: float = 0.5


@dataclass(frozen=True)
class Phase:
    kind: str
    duration_s: Optional[float] = None   # ends after this much (closed-loop) time...
    refs: Optional[int] = None           # ...or after this many references, whichever is first
    footprint_mb: float = 0.0
    offset_mb: float = 0.0               # where the footprint starts, after the OS region
    write_ratio: float = 0.3
    compute_ns: float = 1000.0           # CPU time per reference when nothing faults
    zipf_s: float = 1.0
    hot_fraction: float = 0.2
    hot_probability: float = 0.8
    trace: Optional[str] = None          # path of a recorded trace (kind == "trace")
    trace_loops: int = 1
    free_on_end: bool = False            # the guest frees the footprint when the phase ends
    content: ContentMix = field(default_factory=ContentMix)


@dataclass(frozen=True)
class Event:
    at_s: float
    action: str


@dataclass(frozen=True)
class PolicyEvent:
    """An administrator changes a policy's parameters during the run (W02 changes the idle tax
    this way). It applies to runs of ``policy`` only; ``params`` are merged over the current ones."""

    at_s: float
    policy: str
    params: tuple[tuple[str, object], ...] = ()

    @property
    def changes(self) -> dict[str, object]:
        return dict(self.params)


@dataclass(frozen=True)
class VM:
    name: str
    memory_mb: int                        # configured size (static, overcommit, ESX max)
    startup_mb: Optional[int] = None      # Hyper-V: defaults to memory_mb
    minimum_mb: Optional[int] = None      # Hyper-V: defaults to startup
    maximum_mb: Optional[int] = None      # Hyper-V: defaults to memory_mb
    buffer_pct: int = 20
    weight: int = 5000
    reservation_mb: int = 0               # ESX min
    limit_mb: Optional[int] = None        # ESX limit, defaults to memory_mb
    shares: Optional[int] = None          # ESX shares, defaults to 10 per MB (normal)
    os_image: str = "generic"
    os_mb: int = 256                      # touched by the guest at boot
    os_image_mb: int = 512                # distinct pages of the OS image that pages may equal
    os_content: ContentMix = field(default_factory=lambda: ContentMix(zero=0.25, shared=0.45, compressible=0.5))
    replacement: str = "lru"
    pagefile_mb: Optional[int] = None     # defaults to the VM's largest memory setting
    pagefile_device: str = "ssd"
    smart_paging_device: Optional[str] = None   # defaults to the host swap device
    balloon_driver: bool = True
    phases: tuple[Phase, ...] = ()
    repeat: bool = False                  # loop the phases until the VM stops
    events: tuple[Event, ...] = (Event(0.0, "start"),)

    @property
    def balloon_driver_at_boot(self) -> bool:
        return self.balloon_driver and not any(ev.action == "load_balloon_driver" for ev in self.events)

    @property
    def startup(self) -> int:
        return self.startup_mb if self.startup_mb is not None else self.memory_mb

    @property
    def minimum(self) -> int:
        return self.minimum_mb if self.minimum_mb is not None else self.startup

    @property
    def maximum(self) -> int:
        return self.maximum_mb if self.maximum_mb is not None else max(self.memory_mb, self.startup)

    @property
    def limit(self) -> int:
        return self.limit_mb if self.limit_mb is not None else self.memory_mb

    @property
    def effective_shares(self) -> int:
        return self.shares if self.shares is not None else 10 * self.memory_mb

    @property
    def frames_mb(self) -> int:
        """Guest-physical memory the VM can ever have: its largest memory setting."""
        return max(self.memory_mb, self.maximum, self.startup)


@dataclass(frozen=True)
class Scenario:
    host: Host
    vms: tuple[VM, ...]
    duration_s: float
    seed: int = 0
    epoch_s: float = 1.0
    slice_ms: float = 1.0
    name: str = "scenario"
    description: str = ""
    policy_events: tuple[PolicyEvent, ...] = ()

    def check(self) -> "Scenario":
        """Cross-field rules; raises ScenarioError naming the field."""
        host = self.host
        if host.memory_mb <= 0:
            raise ScenarioError("host.memory_mb", f"must be positive, got {host.memory_mb}")
        if not 0 <= host.reserve_mb < host.memory_mb:
            raise ScenarioError("host.reserve_mb", f"must be at least 0 and below host memory ({host.memory_mb} MB)")
        known = host.device_names()
        if host.swap_device not in known:
            raise ScenarioError("host.swap_device", f"unknown device {host.swap_device!r}; known: {', '.join(known)}")
        if self.duration_s <= 0:
            raise ScenarioError("duration_s", "must be positive")
        if self.epoch_s <= 0 or self.epoch_s > self.duration_s:
            raise ScenarioError("epoch_s", "must be positive and at most the duration")
        if not 0 < self.slice_ms <= self.epoch_s * 1000:
            raise ScenarioError("slice_ms", "must be positive and at most one epoch")
        if not self.vms:
            raise ScenarioError("vms", "at least one VM is needed")
        usable = host.memory_mb - host.reserve_mb
        names = set()
        for i, vm in enumerate(self.vms):
            where = f"vms[{i}]"
            if vm.name in names:
                raise ScenarioError(f"{where}.name", f"duplicate VM name {vm.name!r}")
            names.add(vm.name)
            for attr in ("memory_mb", "startup_mb", "minimum_mb", "maximum_mb"):
                value = getattr(vm, attr)
                if value is not None and value <= 0:
                    raise ScenarioError(f"{where}.{attr}", f"must be positive, got {value}")
            if vm.frames_mb > usable:
                raise ScenarioError(
                    f"{where}.memory_mb",
                    f"VM {vm.name!r} needs up to {vm.frames_mb} MB but the host has {usable} MB for VMs "
                    f"({host.memory_mb} MB minus {host.reserve_mb} MB reserve)")
            if not 0 < vm.minimum <= vm.startup <= vm.maximum:
                raise ScenarioError(f"{where}.minimum_mb", "need minimum_mb <= startup_mb <= maximum_mb")
            if not 5 <= vm.buffer_pct <= 2000:
                raise ScenarioError(f"{where}.buffer_pct", "must be within 5..2000 (Hyper-V rule)")
            if vm.os_mb >= vm.frames_mb:
                raise ScenarioError(f"{where}.os_mb", f"the OS ({vm.os_mb} MB) must fit in the VM's memory ({vm.frames_mb} MB)")
            if vm.replacement not in REPLACEMENTS:
                raise ScenarioError(f"{where}.replacement", f"must be one of {', '.join(REPLACEMENTS)}")
            for attr in ("pagefile_device", "smart_paging_device"):
                dev = getattr(vm, attr)
                if dev is not None and dev not in known:
                    raise ScenarioError(f"{where}.{attr}", f"unknown device {dev!r}; known: {', '.join(known)}")
            for j, ph in enumerate(vm.phases):
                pw = f"{where}.phases[{j}]"
                if ph.kind not in PHASE_KINDS:
                    raise ScenarioError(f"{pw}.kind", f"must be one of {', '.join(PHASE_KINDS)}")
                if ph.kind == "trace" and not ph.trace:
                    raise ScenarioError(f"{pw}.trace", "a trace phase needs a trace file")
                if ph.kind not in ("idle", "trace") and ph.footprint_mb <= 0:
                    raise ScenarioError(f"{pw}.footprint_mb", "must be positive for this kind of phase")
                if ph.duration_s is None and ph.refs is None and ph.kind != "trace":
                    raise ScenarioError(f"{pw}", "needs duration_s or refs (or both)")
                mix = ph.content
                if mix.zero + mix.shared > 1.0:
                    raise ScenarioError(f"{pw}.content", "zero + shared must not exceed 1")
            for j, ev in enumerate(vm.events):
                if ev.action not in EVENT_ACTIONS:
                    raise ScenarioError(f"{where}.events[{j}].action", f"must be one of {', '.join(EVENT_ACTIONS)}")
                if not 0 <= ev.at_s <= self.duration_s:
                    raise ScenarioError(f"{where}.events[{j}].at_s", f"must be within the run (0..{self.duration_s} s)")
        for j, pev in enumerate(self.policy_events):
            if not 0 <= pev.at_s <= self.duration_s:
                raise ScenarioError(f"policy_events[{j}].at_s", f"must be within the run (0..{self.duration_s} s)")
            if not pev.params:
                raise ScenarioError(f"policy_events[{j}].params", "must change at least one parameter")
        return self
