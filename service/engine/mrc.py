"""Miss counts of one VM replaying a trace with exactly N guest frames and no host pressure: the
engine's guest-replacement path, comparable request by request with libCacheSim's cachesim."""
from __future__ import annotations

import numpy as np

from ..sdk import Policy
from .config import PAGES_PER_MB, Costs, Device, Host, Phase, Scenario, VM, ContentMix
from .simulator import Simulation

_TRACE_KEY = "<trace>"


class _Unconstrained(Policy):
    name = "unconstrained"
    summary = "admits everything and never reclaims host memory (for miss-ratio replays)"


def replay_scenario(n_refs: int, footprint: int, replacement: str, frames: int,
                    compute_ns: float = 1.0, device: Device = Device(0.0, 0.0, 1),
                    costs: Costs = Costs(0.0, 0.0, 0.0, 0.0, 0.0)) -> Scenario:
    """One VM of exactly ``frames`` guest frames replaying the trace once on a host with room for
    all of it; with the default zero latencies the simulated time is n_refs * compute_ns."""
    host_mb = (max(frames, footprint) + PAGES_PER_MB) / PAGES_PER_MB + 1
    duration_s = (n_refs * compute_ns + n_refs * (device.read_us + device.write_us + 10) * 1e3) / 1e9 + 1.0
    vm = VM(name="vm", memory_mb=frames / PAGES_PER_MB, os_mb=0, replacement=replacement,
            pagefile_device="replay", os_content=ContentMix(0.0, 0.0, 0.0),
            phases=(Phase(kind="trace", trace=_TRACE_KEY, write_ratio=0.0, compute_ns=compute_ns,
                          content=ContentMix(0.0, 0.0, 0.0)),))
    host = Host(memory_mb=int(host_mb) + 1, reserve_mb=0, vm_overhead_mb=0, swap_device="replay",
                devices={"replay": device}, costs=costs)
    return Scenario(host=host, vms=(vm,), duration_s=duration_s, epoch_s=duration_s,
                    slice_ms=duration_s * 1e3, name="mrc")


def miss_counts(ids: np.ndarray, replacement: str, frames: list[int]) -> list[int]:
    """Misses (cold misses included) for each cache size in ``frames``."""
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    footprint = int(ids.max()) + 1 if len(ids) else 0
    out = []
    for n in frames:
        if n < 1:
            raise ValueError(f"frames must be at least 1, got {n}")
        scenario = replay_scenario(len(ids), footprint, replacement, int(n))
        sim = Simulation(scenario, _Unconstrained(), validate=False, load_trace=lambda _key: ids)
        result = sim.run()
        faults = result.summary["vms"][0]["faults"]
        if result.summary["vms"][0]["refs_done"] != len(ids):
            raise RuntimeError(f"replay stopped after {result.summary['vms'][0]['refs_done']} of {len(ids)} references")
        out.append(faults["first_touch"] + faults["guest_pagefile_read"])
    return out
