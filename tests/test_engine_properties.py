"""Property tests: whatever a policy decides and whatever the workload does, the engine keeps its
books straight (no page lost or counted twice across guest, page file and host levels), never
hands out more host memory than exists, and repeats a run bit for bit from its seed."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from service.engine import ContentMix, Event, Host, Phase, Scenario, Simulation, VM
from service.engine.invariants import check
from service.engine.state import H_FREE_Q
from service.sdk import Decisions, HostDecision, Policy, VMDecision

KINDS = ["uniform", "zipf", "hotcold", "scan", "idle"]


@st.composite
def phases(draw):
    kind = draw(st.sampled_from(KINDS))
    return Phase(
        kind=kind,
        refs=draw(st.integers(200, 6000)),
        footprint_mb=draw(st.sampled_from([1, 2, 4, 8, 16])),
        offset_mb=draw(st.sampled_from([0, 1, 4])),
        write_ratio=draw(st.sampled_from([0.0, 0.2, 0.7, 1.0])),
        compute_ns=draw(st.sampled_from([200.0, 1000.0])),
        zipf_s=draw(st.sampled_from([0.6, 1.0, 1.3])),
        free_on_end=draw(st.booleans()),
        content=ContentMix(zero=draw(st.sampled_from([0.0, 0.2])), shared=draw(st.sampled_from([0.0, 0.3, 0.7])),
                           compressible=draw(st.sampled_from([0.0, 0.5, 1.0]))),
        duration_s=None if kind != "idle" else 0.05,
    )


@st.composite
def vms(draw, index):
    memory = draw(st.sampled_from([8, 12, 16, 24]))
    events = [Event(0.0, "start")]
    for _ in range(draw(st.integers(0, 2))):
        events.append(Event(draw(st.sampled_from([0.1, 0.2, 0.3])), draw(st.sampled_from(["stop", "start", "restart"]))))
    return VM(
        name=f"vm{index}", memory_mb=memory, minimum_mb=None, os_mb=2,
        os_image=draw(st.sampled_from(["a", "b"])), os_image_mb=draw(st.sampled_from([1, 4])),
        replacement=draw(st.sampled_from(["lru", "clock", "fifo"])),
        pagefile_mb=draw(st.sampled_from([None, 4])),
        phases=tuple(draw(st.lists(phases(), min_size=1, max_size=3))),
        repeat=draw(st.booleans()),
        events=tuple(sorted(events, key=lambda e: e.at_s)),
    )


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 3))
    vm_list = tuple(draw(vms(i)) for i in range(n))
    host_mb = draw(st.sampled_from([16, 24, 40, 64]))
    host_mb = max(host_mb, max(v.frames_mb for v in vm_list) + 1)
    return Scenario(host=Host(memory_mb=host_mb, vm_overhead_mb=draw(st.sampled_from([0, 1]))),
                    vms=vm_list, duration_s=0.4, epoch_s=0.05, slice_ms=0.5, seed=draw(st.integers(0, 2**31)))


class ChaosPolicy(Policy):
    """Random but valid decisions every epoch: every mechanism, in any order and combination."""

    name = "chaos"

    def __init__(self, seed: int, salted: bool):
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.salted = salted

    def setup(self, host):
        return HostDecision(sharing_salted=self.salted)

    def admit(self, host, vm, restart):
        from service.sdk import Admission
        r = self.rng
        assigned = int(r.integers(vm.settings.minimum_mb, vm.settings.maximum_mb + 1))
        smart = int(r.integers(0, assigned // 2 + 1)) if restart else 0
        return Admission(admit=bool(r.random() < 0.9), reason="coin", assigned_mb=assigned, smart_paging_mb=smart)

    def on_epoch(self, host):
        r = self.rng
        d = Decisions(host=HostDecision(sharing_pages_per_s=float(r.choice([0, 2000, 50000])),
                                        sharing_scan=str(r.choice(["random", "sequential"]))))
        for v in host.vms:
            if v.state != "running":
                continue
            top = v.settings.maximum_mb
            swap = bool(r.random() < 0.7)
            d.vms[v.name] = VMDecision(
                assigned_mb=float(min(top, v.present_mb + r.integers(0, 4))),
                balloon_mb=float(r.integers(0, int(v.present_mb) + 1)) if r.random() < 0.5 else None,
                host_limit_mb=float(r.integers(1, top + 1)) if r.random() < 0.5 else None,
                host_target_mb=float(r.integers(0, top + 1)) if r.random() < 0.5 else None,
                host_swap=swap,
                host_reclaim_mb=float(r.integers(0, 3)) if swap and r.random() < 0.3 else None,
                report_free_pages=bool(r.random() < 0.3),
                metrics={"coin": float(r.random())} if r.random() < 0.5 else {},
                victim=str(r.choice(["random", "fifo", "clock", "plugin"])),
                compression=bool(r.random() < 0.5),
                blocked=bool(r.random() < 0.1),
                smart_paging_mb=float(r.integers(0, 4)) if r.random() < 0.3 else None,
                sample_pages=int(r.integers(0, 50)),
                sample_s=float(r.choice([0.05, 0.1])) if r.random() < 0.5 else None,
            )
        return d

    def select_victims(self, host, vm, candidates, count):
        return self.rng.permutation(candidates)[:count]


def _run_checked(scenario: Scenario, seed: int, salted: bool):
    sim = Simulation(scenario, ChaosPolicy(seed, salted))
    free_seen = []

    def after_epoch(_fraction):
        free_seen.append(int(sim.st.host_i[H_FREE_Q]))
        check(sim.st, sim.overhead_q)

    result = sim.run(progress=after_epoch)
    return sim, result, free_seen


@settings(max_examples=int(__import__("os").environ.get("VMEMLAB_PROPERTY_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 1000), st.booleans())
def test_books_balance_after_every_epoch(scenario, seed, salted):
    sim, result, free_seen = _run_checked(scenario, seed, salted)
    assert min(free_seen) >= 0, "more host memory handed out than the host has"
    for entry in result.summary["vms"]:
        assert entry["peak_resident_mb"] <= sim.scenario.host.memory_mb
    assert result.summary["host"]["peak_used_mb"] <= scenario.host.memory_mb


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 1000), st.booleans())
def test_same_seed_same_result(scenario, seed, salted):
    _, first, _ = _run_checked(scenario, seed, salted)
    _, second, _ = _run_checked(scenario, seed, salted)
    assert first.summary == second.summary
    assert first.series == second.series
