"""Per-epoch series and the run's summary."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .config import PAGES_PER_MB
from .state import (
    C_GUEST_FAULT, C_REFS, F_BLOCKED, F_COMPUTE, F_MEMORY_WAIT, F_STALL, FAULT_NAMES, H_FREE_Q,
    H_SHARE_ON, H_SHARED_FRAMES, H_SMART_USED, H_SWAP_USED, HF_GUEST_FAULT_NS, HF_ZERO_FILL_NS, I_BACKED_Q,
    I_COMP_Q, I_COMPRESSED, I_MIN_Q, I_NBALLOON, I_OOM, I_PAGED, I_PRESENT, I_RESIDENT, I_SHARED, I_SLOT_BASE,
    I_SMART, I_SWAPPED, I_TOUCHED, Q_PER_PAGE,
)

if TYPE_CHECKING:
    from .simulator import Simulation

Q_PER_MB = PAGES_PER_MB * Q_PER_PAGE

SERIES_VM_FIELDS = (
    "running", "assigned_mb", "visible_mb", "ballooned_mb", "resident_mb", "private_mb", "shared_mb",
    "compressed_mb", "host_swapped_mb", "smart_paged_mb", "guest_paged_mb", "committed_mb",
    "refs", "stall_ms", "blocked_ms",
    # allocated: host memory the VM holds (private RAM, shared frames it maps, compression cache at
    # compressed size, Smart Paging file), the figure its guarantee and a policy's targets are about
    "compressed_size_mb", "allocated_mb", "guaranteed_mb",
) + FAULT_NAMES
SERIES_HOST_FIELDS = (
    "used_mb", "free_mb", "shared_frames_mb", "shared_mb", "sharing_saved_mb", "compression_cache_mb",
    "host_swap_mb", "smart_paging_mb", "assigned_mb",
    # the zero-page part of shared_mb and sharing_saved_mb (W02 Fig. 5 reports it apart)
    "zero_shared_mb", "zero_saved_mb",
)
LAST_MINUTE_S = 60.0


def jain_index(values: list[float]) -> Optional[float]:
    """Jain's fairness index: 1 when all equal, 1/n when one value holds everything."""
    if not values:
        return None
    x = np.asarray(values, dtype=np.float64)
    denom = len(x) * float(np.sum(x * x))
    return float(np.sum(x) ** 2 / denom) if denom > 0 else None


class Recorder:
    def __init__(self, scenario, n_vms: int):
        self.scenario = scenario
        self.n = n_vms
        self.times: list[float] = []
        self.labels: list[str] = []
        self.vm_rows: list[np.ndarray] = []
        self.host_rows: list[np.ndarray] = []
        self.last_stall = np.zeros(n_vms)
        self.last_blocked = np.zeros(n_vms)
        self.oom = np.zeros(n_vms, dtype=bool)
        self.policy_metrics: dict[int, dict[str, list]] = {}

    def record(self, sim: "Simulation", t_ns: float, deltas: np.ndarray) -> None:
        st = sim.st
        vi = st.vm_i
        mb = 1.0 / PAGES_PER_MB
        running = np.array([s == "running" for s in sim.vm_state], dtype=np.float64)
        stall = st.vm_f[:, F_STALL].copy()
        blocked = st.vm_f[:, F_BLOCKED].copy()
        self.oom |= vi[:, I_OOM] != 0
        present = vi[:, I_PRESENT] * mb
        ballooned = vi[:, I_NBALLOON] * mb
        cols = [
            running, present, present - ballooned, ballooned,
            (vi[:, I_RESIDENT] + vi[:, I_SHARED]) * mb, vi[:, I_RESIDENT] * mb, vi[:, I_SHARED] * mb,
            vi[:, I_COMPRESSED] * mb, vi[:, I_SWAPPED] * mb, vi[:, I_SMART] * mb, vi[:, I_PAGED] * mb,
            vi[:, I_TOUCHED] * mb, deltas[:, C_REFS].astype(np.float64),
            (stall - self.last_stall) / 1e6, (blocked - self.last_blocked) / 1e6,
            vi[:, I_COMP_Q] / Q_PER_MB, (vi[:, I_BACKED_Q] / Q_PER_PAGE + vi[:, I_SHARED] + vi[:, I_SMART]) * mb,
            vi[:, I_MIN_Q] / Q_PER_MB,
        ] + [deltas[:, i + 1].astype(np.float64) for i in range(len(FAULT_NAMES))]
        self.vm_rows.append(np.stack(cols, axis=1))
        self.last_stall, self.last_blocked = stall, blocked
        hi = st.host_i
        free_mb = hi[H_FREE_Q] / Q_PER_MB
        shared_frames = hi[H_SHARED_FRAMES] * mb
        hints = np.count_nonzero(st.share_ref == 1) * mb     # frames only one guest page maps so far
        mapped = vi[:, I_SHARED].sum() * mb
        zero_refs = self._zero_refs(st)
        self.host_rows.append(np.array([
            sim.scenario.host.memory_mb - free_mb, free_mb, shared_frames,
            # W02's "shared": guest pages on frames that two or more of them map
            mapped - hints, mapped - shared_frames, vi[:, I_COMP_Q].sum() / Q_PER_MB,
            hi[H_SWAP_USED] * mb, hi[H_SMART_USED] * mb, float((present * running).sum()),
            zero_refs[zero_refs >= 2].sum() * mb, np.maximum(zero_refs - 1, 0).sum() * mb,
        ]))
        self.times.append(t_ns / 1e9)
        self.labels.append(sim.host_label)
        epoch = len(self.times) - 1
        for v, metrics in sim.policy_metrics.items():
            table = self.policy_metrics.setdefault(v, {})
            for key, value in metrics.items():
                table.setdefault(key, [None] * epoch).append(value)
        for table in self.policy_metrics.values():
            for column in table.values():
                column.extend([None] * (epoch + 1 - len(column)))

    @staticmethod
    def _zero_refs(st) -> np.ndarray:
        """Guest pages mapped to each zero-page frame: the first slot of every content space
        (one per OS image, or per VM when sharing is salted) holds the zero page."""
        if not st.host_i[H_SHARE_ON]:
            return np.zeros(0, dtype=np.int64)
        return st.share_ref[np.unique(st.vm_i[:, I_SLOT_BASE])].astype(np.int64)

    def vm_array(self) -> np.ndarray:
        """(epochs, vms, fields)"""
        return np.stack(self.vm_rows) if self.vm_rows else np.zeros((0, self.n, len(SERIES_VM_FIELDS)))

    def host_array(self) -> np.ndarray:
        return np.stack(self.host_rows) if self.host_rows else np.zeros((0, len(SERIES_HOST_FIELDS)))

    def series(self) -> dict[str, Any]:
        vm = self.vm_array()
        host = self.host_array()
        return {
            "time_s": [round(t, 9) for t in self.times],
            "host": {name: host[:, i].tolist() for i, name in enumerate(SERIES_HOST_FIELDS)},
            "host_state": list(self.labels),
            "vms": {
                v.name: {name: vm[:, k, i].tolist() for i, name in enumerate(SERIES_VM_FIELDS)}
                for k, v in enumerate(self.scenario.vms)
            },
            # figures a policy chose to report per VM (e.g. ESX's active-memory estimate)
            "policy": {
                self.scenario.vms[k].name: {key: list(col) for key, col in table.items()}
                for k, table in sorted(self.policy_metrics.items())
            },
        }


def state_shares(labels: list[str]) -> dict[str, float]:
    named = [label for label in labels if label]
    return {label: 100.0 * named.count(label) / len(labels) for label in dict.fromkeys(named)}


def notes(sim: "Simulation") -> list[str]:
    """What a reader of the run should know happened: refusals, restarts, parameter changes,
    balloon drivers loading, the first time a guest's page file was full, and VMs that waited
    for host memory that no VM could give without going below its guarantee."""
    out = []
    seen_oom = set()
    for e in sim.events_log:
        if e["event"] == "start" or (e["event"] == "oom" and e["vm"] in seen_oom):
            continue
        if e["event"] == "oom":
            seen_oom.add(e["vm"])
        who = f"{e['vm']}: " if e["vm"] else ""
        out.append(f"{e['time_s']:g} s: {who}{e['event']}" + (f" ({e['detail']})" if e["detail"] else ""))
    for v, cfg in enumerate(sim.scenario.vms):
        wait = sim.st.vm_f[v, F_MEMORY_WAIT] / 1e9
        if wait > 0:
            out.append(f"{cfg.name}: waited {wait:.1f} s for host memory that no VM could give "
                       f"(the others at their guarantees or not swappable)")
    return out


def summarize(sim: "Simulation") -> dict[str, Any]:
    from .simulator import ENGINE_VERSION
    sc = sim.scenario
    st = sim.st
    rec = sim.recorder
    vm = rec.vm_array()
    host = rec.host_array()
    f = {name: i for i, name in enumerate(SERIES_VM_FIELDS)}
    h = {name: i for i, name in enumerate(SERIES_HOST_FIELDS)}
    guest_fault_ns = st.host_f[HF_GUEST_FAULT_NS]
    times = np.asarray(rec.times)
    last_minute = times > (times[-1] - LAST_MINUTE_S - 1e-9) if len(times) else slice(None)
    vms = []
    slowdowns = []
    for v, cfg in enumerate(sc.vms):
        compute = st.vm_f[v, F_COMPUTE]
        stall = st.vm_f[v, F_STALL]
        blocked = st.vm_f[v, F_BLOCKED]
        running_s = float(vm[:, v, f["running"]].sum() * sc.epoch_s) if len(vm) else 0.0
        # the same VM unconstrained still pays for first touches: the guest's fault and the
        # host's zero fill of a fresh page
        ideal = compute + st.vm_c[v, C_GUEST_FAULT] * (guest_fault_ns + st.host_f[HF_ZERO_FILL_NS])
        slowdown = float((compute + stall + blocked) / ideal) if compute > 0 else None
        if not sim.ever_ran[v]:
            state = "refused"
        elif rec.oom[v]:
            state = "oom"
        elif running_s > 0 and blocked / 1e9 > 0.5 * running_s:
            state = "blocked"
        else:
            state = "ran"
        if slowdown is not None and state != "refused":
            slowdowns.append(slowdown)

        def peak(name: str) -> float:
            return float(vm[:, v, f[name]].max()) if len(vm) else 0.0

        entry = {
            "name": cfg.name,
            "state": state,
            "slowdown": slowdown,
            "refs_done": int(st.vm_c[v, C_REFS]),
            "faults": {name: int(st.vm_c[v, i + 1]) for i, name in enumerate(FAULT_NAMES)},
            "peak_resident_mb": peak("resident_mb"),
            "peak_assigned_mb": peak("assigned_mb"),
            "host_swapped_peak_mb": peak("host_swapped_mb"),
            "ballooned_peak_mb": peak("ballooned_mb"),
            "guest_paged_peak_mb": peak("guest_paged_mb"),
            "shared_peak_mb": peak("shared_mb"),
            "compressed_peak_mb": peak("compressed_mb"),
            "smart_paged_peak_mb": peak("smart_paged_mb"),
            "stall_s": float(stall / 1e9),
            "blocked_s": float(blocked / 1e9),
            "memory_wait_s": float(st.vm_f[v, F_MEMORY_WAIT] / 1e9),
            "running_s": running_s,
            "guaranteed_mb": peak("guaranteed_mb"),
            "allocated_end_mb": float(vm[-1, v, f["allocated_mb"]]) if len(vm) else 0.0,
            "allocated_last_minute_mb": float(vm[last_minute, v, f["allocated_mb"]].mean()) if len(vm) else 0.0,
        }
        if sim.refusals[v]:
            entry["refused_reason"] = sim.refusals[v]
        vms.append(entry)

    usable = sc.host.memory_mb - sc.host.reserve_mb

    def host_stat(name: str, how) -> float:
        return float(how(host[:, h[name]])) if len(host) else 0.0

    totals = {name: sum(e["faults"][name] for e in vms) for name in FAULT_NAMES}
    return {
        "scenario": sc.name,
        "policy": sim.policy.name,
        "policy_version": sim.policy.version,
        "engine_version": ENGINE_VERSION,
        "seed": sc.seed,
        "duration_s": sc.duration_s,
        "slowdown": float(np.mean(slowdowns)) if slowdowns else None,
        "fairness": jain_index(slowdowns),
        "vms": vms,
        "faults": totals,
        "host": {
            "memory_mb": sc.host.memory_mb,
            "peak_used_mb": float(host[:, h["used_mb"]].max()) if len(host) else 0.0,
            "mean_used_mb": float(host[:, h["used_mb"]].mean()) if len(host) else 0.0,
            "sharing_saved_mb_mean": float(host[:, h["sharing_saved_mb"]].mean()) if len(host) else 0.0,
            "sharing_saved_mb_peak": float(host[:, h["sharing_saved_mb"]].max()) if len(host) else 0.0,
            "host_swap_peak_mb": float(host[:, h["host_swap_mb"]].max()) if len(host) else 0.0,
            "smart_paging_peak_mb": float(host[:, h["smart_paging_mb"]].max()) if len(host) else 0.0,
            "compression_cache_peak_mb": float(host[:, h["compression_cache_mb"]].max()) if len(host) else 0.0,
            "overcommit_ratio": float(host[:, h["assigned_mb"]].max() / usable) if len(host) else 0.0,
            "sharing_saved_zero_mb_mean": host_stat("zero_saved_mb", np.mean),
            "sharing_saved_zero_mb_peak": host_stat("zero_saved_mb", np.max),
            "sharing_saved_other_mb_mean": host_stat("sharing_saved_mb", np.mean) - host_stat("zero_saved_mb", np.mean),
            # share of epochs in each state the policy reported (ESX: high, soft, hard, low)
            "states_pct": state_shares(rec.labels),
        },
        "notes": notes(sim),
        "vms_refused": sum(1 for e in vms if e["state"] == "refused"),
        "vms_blocked": sum(1 for e in vms if e["state"] == "blocked"),
    }
