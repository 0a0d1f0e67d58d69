"""The engine benchmark's cases and instruments (bench/engine.py prints what they measure).

* the Zipf trace of case 1, generated here with a fixed seed;
* the three replay paths over the same ids: the engine's ``mrc`` path, libCacheSim's C loop and
  per-request calls, the bare numba loops of bench/bare_loops.py;
* the host scenario of case 2, scalable to any number of VMs at the same memory pressure;
* ``PhaseTimer``: wall time per phase of ``Simulation.run()``, by wrapping the simulator's
  callables from outside (the engine is not changed);
* counts per phase from a run's summary, and the engine's state in bytes per guest page.
"""
from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import libcachesim as lcs
import numpy as np

import service.engine.kernel as kernel_module
import service.engine.simulator as simulator_module
from bench.bare_loops import bare_misses
from service.engine import ContentMix, Host, Phase, Scenario, Simulation, VM
from service.engine.mrc import miss_counts
from service.sdk import Decisions, HostDecision, Policy

try:        # the replay scenario behind miss_counts, for the profile; optional if the engine changes
    from service.engine.mrc import _Unconstrained, replay_scenario
except ImportError:     # pragma: no cover
    _Unconstrained = replay_scenario = None


@dataclass
class Timed:
    best_s: float
    misses: int
    runs_s: list[float] = field(default_factory=list)


def best_of(repeat: int, fn: Callable[[], int], what: str) -> Timed:
    """Run ``fn`` (which returns a miss count) ``repeat`` times; the best time, the one count."""
    times, counts = [], set()
    for _ in range(repeat):
        t0 = time.perf_counter()
        counts.add(int(fn()))
        times.append(time.perf_counter() - t0)
    if len(counts) != 1:
        raise SystemExit(f"{what} is not deterministic: miss counts {sorted(counts)}")
    return Timed(min(times), counts.pop(), times)


# --- case 1: the trace ---------------------------------------------------------------------------

def zipf_trace(n_refs: int, n_ranks: int, s: float, seed: int) -> np.ndarray:
    """``n_refs`` references drawn from Zipf(s) over ranks 1..n_ranks (exact finite distribution,
    inverse CDF), ranks scattered over page ids by a random permutation (hot pages are not
    neighbours), then renumbered densely 0..distinct-1 keeping that random order. int32."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(np.arange(1, n_ranks + 1, dtype=np.float64) ** -s)
    cdf /= cdf[-1]
    ranks = np.minimum(np.searchsorted(cdf, rng.random(n_refs), side="right"), n_ranks - 1)
    ids = rng.permutation(n_ranks).astype(np.int32)[ranks]
    seen = np.zeros(n_ranks, dtype=bool)
    seen[ids] = True
    return np.ascontiguousarray((np.cumsum(seen, dtype=np.int32) - 1)[ids])


# --- case 1: the three paths ---------------------------------------------------------------------

def engine_mrc(ids: np.ndarray, policy: str, frames: int, repeat: int) -> Timed:
    """The engine as ``vmemlab mrc`` runs it once the trace is loaded: ``miss_counts`` for one
    cache size (state built, one VM replayed, summary made). Call warm_up first."""
    return best_of(repeat, lambda: miss_counts(ids, policy, [frames])[0], f"engine {policy} replay")


def warm_up(ids: np.ndarray) -> None:
    """numba compiles or loads every function on first use: do it outside the clock."""
    small = np.ascontiguousarray(ids[:20_000])
    for policy in ("lru", "clock"):
        miss_counts(small, policy, [max(1, int(small.max()) // 10)])
        bare_misses(small, policy, 10)


def bare_loop(ids: np.ndarray, policy: str, frames: int, repeat: int) -> Timed:
    return best_of(repeat, lambda: bare_misses(ids, policy, frames), f"bare {policy} loop")


def write_oracle_general(ids: np.ndarray, path: Path) -> None:
    """libCacheSim's oracleGeneral binary format: one packed 24-byte record per request
    (uint32 time, uint64 object id, uint32 size, int64 virtual time of the next request to the
    same object, -1 if none). Size 1 makes a cache of C bytes hold C pages, as in expected.json."""
    n = len(ids)
    record = np.dtype([("time", "<u4"), ("obj_id", "<u8"), ("size", "<u4"), ("next_vtime", "<i8")])
    assert record.itemsize == 24
    out = np.empty(n, dtype=record)
    out["time"] = np.arange(n, dtype=np.uint32)
    out["obj_id"] = ids
    out["size"] = 1
    # next access: sort references by id (stable keeps time order within an id); each reference's
    # successor in that order is its next access when it has the same id
    order = np.argsort(ids, kind="stable")
    same = ids[order[1:]] == ids[order[:-1]]
    next_vtime = np.full(n, -1, dtype=np.int64)
    next_vtime[order[:-1][same]] = order[1:][same]
    out["next_vtime"] = next_vtime
    out.tofile(path)


LCS_CACHES = {"lru": lcs.LRU, "clock": lcs.Clock}    # Clock: 1-bit counter, inserted with it clear


def libcachesim_c_loop(path: Path, n_refs: int, policy: str, frames: int, repeat: int) -> Timed:
    """libCacheSim's cache of ``frames`` objects replays the oracleGeneral file in C
    (``cache.process_trace(reader)``, its fastest whole-trace path in the 0.3.5 binding). Only
    process_trace is timed: reader and cache are built before the clock starts; a first run, not
    timed, brings the file into the page cache."""
    times, counts = [], set()
    for i in range(repeat + 1):
        reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE)
        cache = LCS_CACHES[policy](frames)
        t0 = time.perf_counter()
        miss_ratio, _byte_miss_ratio = cache.process_trace(reader)
        elapsed = time.perf_counter() - t0
        # libCacheSim reports 1 - hits/refs; at these lengths the float is exact to far below 1 miss
        counts.add(int(round(miss_ratio * n_refs)))
        if i > 0:
            times.append(elapsed)
    if len(counts) != 1:
        raise SystemExit(f"libCacheSim {policy} replay is not deterministic: miss counts {sorted(counts)}")
    return Timed(min(times), counts.pop(), times)


def libcachesim_per_request(ids: np.ndarray, policy: str, frames: int) -> Timed:
    """libCacheSim driven from Python one request at a time (``cache.get(req)``), the way a
    simulator written around the binding calls it. Slow: run it on a prefix."""
    pages = ids.tolist()
    cache = LCS_CACHES[policy](frames)
    req = lcs.Request()
    req.obj_size = 1
    misses = 0
    t0 = time.perf_counter()
    for page in pages:
        req.obj_id = page
        if not cache.get(req):
            misses += 1
    return Timed(time.perf_counter() - t0, misses)


# --- timing the phases of a run from outside -----------------------------------------------------

PHASES = (   # (where, attribute, label); "sim" and "sim.hooks"/"sim.recorder" are per instance
    ("kernel", "run_epoch", "kernel (references, faults, slices)"),
    ("sim.hooks", "call", "policy hooks (the plugin's code)"),
    ("sim", "host_view", "views built for the policy"),
    ("sim", "_apply", "applying the policy's decisions"),
    ("sim", "_apply_events", "lifecycle events"),
    ("sim", "_share", "content-based sharing scan"),
    ("sim", "_report_free_pages", "free page reporting"),
    ("sim.recorder", "record", "recording the series"),
    ("simulator", "summarize", "the run's summary"),
)
KERNEL_PHASE = PHASES[0][2]
HOOKS_PHASE = PHASES[1][2]
OTHER_PHASE = "the rest of the epoch loop"


class PhaseTimer:
    """Wraps the simulator's callables (module functions, instance methods) with a timer that
    keeps each one's own time (time in a wrapped callee is its callee's), then puts them back.
    A callable the engine no longer has is listed in ``missing``."""

    def __init__(self) -> None:
        self.self_s: dict[str, float] = {label: 0.0 for _, _, label in PHASES}
        self.calls: dict[str, int] = {label: 0 for _, _, label in PHASES}
        self.missing: list[str] = []
        self._stack: list[float] = []
        self._patched: list[tuple[Any, str, Any, bool]] = []

    def instrument(self, sim: Simulation) -> "PhaseTimer":
        owners = {"kernel": kernel_module, "simulator": simulator_module, "sim": sim,
                  "sim.hooks": getattr(sim, "hooks", None), "sim.recorder": getattr(sim, "recorder", None)}
        for where, attr, label in PHASES:
            owner = owners[where]
            if owner is None or not callable(getattr(owner, attr, None)):
                self.missing.append(f"{where}.{attr}")
                continue
            self._wrap(owner, attr, label, own=attr in vars(owner))
        return self

    def _wrap(self, owner: Any, attr: str, label: str, own: bool) -> None:
        original = getattr(owner, attr)
        stack, self_s, calls = self._stack, self.self_s, self.calls

        def timed(*args, **kwargs):
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                self_s[label] += elapsed - stack.pop()
                calls[label] += 1
                if stack:
                    stack[-1] += elapsed

        setattr(owner, attr, timed)
        self._patched.append((owner, attr, original, own))

    def restore(self) -> None:
        for owner, attr, original, own in reversed(self._patched):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
        self._patched.clear()

    def table(self, run_s: float) -> dict[str, float]:
        """Seconds per phase, the rest of run() included; phases never called are left out."""
        out = {label: s for label, s in self.self_s.items() if self.calls[label]}
        out[OTHER_PHASE] = max(0.0, run_s - sum(out.values()))
        return out


def timed_run(sim: Simulation, progress: Callable[[float], None] | None = None):
    """``sim.run()`` under a PhaseTimer: (result, seconds, timer)."""
    timer = PhaseTimer().instrument(sim)
    try:
        t0 = time.perf_counter()
        result = sim.run(progress=progress)
        elapsed = time.perf_counter() - t0
    finally:
        timer.restore()
    return result, elapsed, timer


def slices_of(scenario: Scenario) -> int:
    """Slices the epoch loop runs (simulator.run and kernel.run_epoch, replayed in Python)."""
    n_epochs = max(1, int(math.ceil(scenario.duration_s / scenario.epoch_s - 1e-9)))
    epoch_ns, slice_ns, end = scenario.epoch_s * 1e9, scenario.slice_ms * 1e6, scenario.duration_s * 1e9
    total = 0
    for e in range(n_epochs):
        t, t1 = e * epoch_ns, min((e + 1) * epoch_ns, end)
        while t < t1:
            total += 1
            t = min(t + slice_ns, t1)
    return total


def run_counts(scenario: Scenario, summary: dict) -> dict[str, int]:
    """What the run did, by phase, from its summary. A reference can raise more than one fault
    event and a first write to a clean page raises none, so hits are approximate."""
    refs = sum(vm["refs_done"] for vm in summary["vms"])
    f = summary["faults"]
    guest = f["first_touch"] + f["guest_pagefile_read"]
    host = f["host_swap_in"] + f["decompression"] + f["smart_paging_in"]
    slices = slices_of(scenario)
    return {
        "refs": refs, "hits": refs - guest - host - f["cow_break"],
        "guest_faults": guest, "first_touch": f["first_touch"], "guest_pagefile_read": f["guest_pagefile_read"],
        "guest_page_out": f["guest_page_out"], "host_faults": host, "host_swap_in": f["host_swap_in"],
        "host_swap_out": f["host_swap_out"], "zero_fill": f["zero_fill"], "cow_break": f["cow_break"],
        "double_paging": f["double_paging"],
        "epochs": max(1, int(math.ceil(scenario.duration_s / scenario.epoch_s - 1e-9))),
        "slices": slices, "vm_slices_at_most": slices * len(scenario.vms),
    }


def profile_replay(ids: np.ndarray, policy: str, frames: int) -> dict | None:
    """One instrumented run of the replay behind ``miss_counts`` (same scenario, same policy)."""
    if replay_scenario is None:
        return None
    t0 = time.perf_counter()
    scenario = replay_scenario(len(ids), int(ids.max()) + 1, policy, frames)
    sim = Simulation(scenario, _Unconstrained(), validate=False, load_trace=lambda _key: ids)
    build_s = time.perf_counter() - t0
    result, run_s, timer = timed_run(sim)
    return {"build_s": build_s, "run_s": run_s, "phases_s": timer.table(run_s), "missing": timer.missing,
            "counts": run_counts(scenario, result.summary), "memory": state_memory(sim)}


def state_memory(sim: Simulation) -> dict[str, Any]:
    """Bytes of the engine's per-frame and per-page arrays (state.bytes_per_frame), per guest
    frame and per guest page (page-table entry). Per-VM, host and phase tables are left out."""
    st = sim.st
    try:
        from service.engine.state import bytes_per_frame
        sizes = {k: int(v) for k, v in bytes_per_frame(st).items()}
    except (ImportError, AttributeError):     # pragma: no cover: the engine's state changed
        sizes = {k: int(a.nbytes) for k, a in st._asdict().items()
                 if isinstance(a, np.ndarray) and a.ndim == 1 and k not in ("rng", "traces")}
    total = sum(sizes.values())
    frames, pages = len(st.frame_page), len(st.page_table)
    return {"bytes": total, "frames": frames, "pages": pages, "by_array": sizes,
            "per_frame": total / max(frames, 1), "per_page": total / max(pages, 1)}


# --- case 2: VMs under memory pressure ------------------------------------------------------------

class BenchOvercommit(Policy):
    """Stand-in if plugins/overcommit.py is missing: content-based sharing plus host swap with
    random victims for every VM, nothing else (no balloon, no compression)."""

    name = "bench-overcommit"
    version = "0"
    summary = "sharing + random host swap for every VM (benchmark stand-in)"
    SHARING_PAGES_PER_S = 20_000     # per VM (80 MB/s): sharing shows within seconds

    def on_epoch(self, host):
        decisions = Decisions(host=HostDecision(sharing_pages_per_s=self.SHARING_PAGES_PER_S))
        for vm in host.running:
            d = decisions.vm(vm.name)
            d.host_swap = True
            d.victim = "random"
        return decisions


def overcommit_policy() -> Policy:
    """The project's overcommit policy with its defaults, else the stand-in. A broken
    plugins/overcommit.py fails the benchmark rather than being silently replaced."""
    if importlib.util.find_spec("plugins.overcommit") is not None:
        from plugins.overcommit import OvercommitPolicy
        return OvercommitPolicy.create({})
    return BenchOvercommit()


HOST_MB = 12 * 1024       # for 16 VMs; other sizes get the same pressure (host_memory_mb)
VM_MB = 1024
OS_MB = 128
# (kind, footprint MB, compute ns per reference, extra Phase fields): a mix of skews and speeds.
# 16 VMs: 4 x (900 + 760 + 400 + 760) MB + 16 x 128 MB of OS = 13.3 GB of working sets for 11.5 GB
# of host memory left after the per-VM overhead: about 13 % too much, so the host swaps all along.
WORKLOADS = (
    ("zipf", 900, 100.0, dict(zipf_s=1.0)),
    ("hotcold", 760, 200.0, dict(hot_fraction=0.2, hot_probability=0.95)),
    ("uniform", 400, 300.0, {}),
    ("zipf", 760, 150.0, dict(zipf_s=1.2)),
)
# some zero and OS-identical pages in the workloads' data, so that sharing finds more than the OS
WORKLOAD_CONTENT = ContentMix(zero=0.10, shared=0.10, compressible=0.5)


def _vms(n_vms: int, duration_s: float, replacement: str) -> tuple[VM, ...]:
    vms = []
    for i in range(n_vms):
        kind, footprint, compute_ns, extra = WORKLOADS[i % len(WORKLOADS)]
        phase = Phase(kind=kind, duration_s=duration_s, footprint_mb=footprint, write_ratio=0.2,
                      compute_ns=compute_ns, content=WORKLOAD_CONTENT, **extra)
        # one OS image for all: the OS's zero and image pages are shareable across VMs
        vms.append(VM(name=f"vm{i:02d}", memory_mb=VM_MB, os_mb=OS_MB, os_image="linux", phases=(phase,),
                      replacement=replacement))
    return tuple(vms)


def _demand_mb(vms) -> float:
    return sum(vm.os_mb + sum(ph.footprint_mb for ph in vm.phases) for vm in vms)


def host_memory_mb(n_vms: int) -> int:
    """Host memory that puts ``n_vms`` VMs of the mix under the 16-VM scenario's pressure
    (demand / memory left for guests); HOST_MB for 16 VMs. A host must hold one whole VM, so a
    single VM gets VM_MB + overhead (and less pressure: working_set_ratio says how much)."""
    overhead = Host(memory_mb=HOST_MB).vm_overhead_mb
    ratio = _demand_mb(_vms(16, 1.0, "clock")) / (HOST_MB - 16 * overhead)
    scaled = int(round(_demand_mb(_vms(n_vms, 1.0, "clock")) / ratio)) + n_vms * overhead
    return max(scaled, VM_MB + overhead)


def host_scenario(duration_s: float, replacement: str = "clock", n_vms: int = 16) -> Scenario:
    return Scenario(host=Host(memory_mb=host_memory_mb(n_vms), swap_device="ssd"),
                    vms=_vms(n_vms, duration_s, replacement),
                    duration_s=duration_s, epoch_s=1.0, seed=1).check()


def working_set_ratio(scenario: Scenario) -> float:
    host = scenario.host
    available = host.memory_mb - host.reserve_mb - host.vm_overhead_mb * len(scenario.vms)
    return _demand_mb(scenario.vms) / available
