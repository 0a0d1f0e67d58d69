"""The mechanisms behave as the real systems do, each driven directly through a fixed policy."""
from __future__ import annotations

import pytest

from service.engine import ContentMix, Device, Event, Host, Phase, Scenario, Simulation, simulate
from service.engine.invariants import check
from service.sdk import Admission, Decisions, HostDecision, Policy, VMDecision

from .helpers import FixedPolicy, scenario, vm

SKEWED = Phase(kind="zipf", footprint_mb=200, zipf_s=1.0, duration_s=20, write_ratio=0.3, compute_ns=1000)


def faults(result, name="vm"):
    return next(v for v in result.summary["vms"] if v["name"] == name)["faults"]


def vm_summary(result, name="vm"):
    return next(v for v in result.summary["vms"] if v["name"] == name)


def run_checked(sc, policy):
    sim = Simulation(sc, policy)
    result = sim.run(progress=lambda _f: check(sim.st, sim.overhead_q))
    return result


@pytest.mark.parametrize("trace,memory_mb", [("lackey_cc1", 3), ("lackey_sort", 2)])
def test_blind_host_swapping_faults_more_than_guest_lru_paging_at_equal_memory(data_dir, trace, memory_mb):
    # the same host RAM for a real program's references: once taken by the host (random
    # victims, while the guest believes it has 8 MB), once by the guest (balloon, its own LRU)
    phase = Phase(kind="trace", trace=str(data_dir / f"{trace}.txt.gz"), write_ratio=0.3, compute_ns=100)
    sc = scenario([vm(memory_mb=8, os_mb=0, phases=[phase])], host_mb=64, duration_s=60, epoch_s=1)
    host_paged = run_checked(sc, FixedPolicy(per_vm={"vm": VMDecision(host_limit_mb=memory_mb, host_swap=True, victim="random")}))
    guest_paged = run_checked(sc, FixedPolicy(per_vm={"vm": VMDecision(balloon_mb=8 - memory_mb)}))
    hf, gf = faults(host_paged), faults(guest_paged)
    assert hf["guest_pagefile_read"] == 0 and gf["host_swap_in"] == 0
    assert vm_summary(host_paged)["refs_done"] == vm_summary(guest_paged)["refs_done"]   # the whole trace
    assert gf["guest_pagefile_read"] > 0
    assert hf["host_swap_in"] > 2 * gf["guest_pagefile_read"], (hf, gf)
    assert vm_summary(host_paged)["slowdown"] > vm_summary(guest_paged)["slowdown"]
    # both held the same host memory
    assert vm_summary(host_paged)["peak_resident_mb"] == pytest.approx(memory_mb, abs=0.05)
    assert vm_summary(guest_paged)["peak_resident_mb"] == pytest.approx(memory_mb, abs=0.05)


def test_host_clock_on_accessed_bits_beats_random_victims():
    sc = scenario([vm(memory_mb=256, os_mb=8, phases=[SKEWED])], host_mb=1024, duration_s=20, epoch_s=1)
    results = {
        strategy: run_checked(sc, FixedPolicy(per_vm={"vm": VMDecision(host_limit_mb=108, host_swap=True, victim=strategy)}))
        for strategy in ("random", "fifo", "clock")
    }
    swapins = {k: faults(r)["host_swap_in"] for k, r in results.items()}
    assert swapins["clock"] < swapins["random"], swapins
    assert all(v > 0 for v in swapins.values())


def test_hdd_host_swap_costs_more_than_ssd():
    def run(device):
        sc = Scenario(host=Host(memory_mb=1024, swap_device=device), vms=(vm(memory_mb=256, os_mb=8, phases=[SKEWED]),),
                      duration_s=20, epoch_s=1, seed=3)
        return run_checked(sc, FixedPolicy(per_vm={"vm": VMDecision(host_limit_mb=108, host_swap=True)}))
    nvme, ssd, hdd = (vm_summary(run(d))["slowdown"] for d in ("nvme", "ssd", "hdd"))
    assert nvme < ssd < hdd


def test_double_paging_is_counted_when_the_guest_evicts_host_swapped_pages():
    # the host swaps blindly; then the balloon makes the guest page out its coldest pages,
    # many of which the host has already swapped: each must be read back only to be written out
    phases = [Phase(kind="uniform", footprint_mb=120, refs=400_000, write_ratio=1.0, compute_ns=1000),
              Phase(kind="idle", duration_s=30)]
    sc = scenario([vm(memory_mb=256, os_mb=8, phases=phases)], host_mb=1024, duration_s=6, epoch_s=1)

    class SwapThenBalloon(Policy):
        name = "swap-then-balloon"

        def on_epoch(self, host):
            d = Decisions()
            v = host.vm("vm")
            if host.epoch < 3:
                d.vms["vm"] = VMDecision(host_limit_mb=64, host_swap=True)
            else:
                d.vms["vm"] = VMDecision(balloon_mb=200)
            return d

    result = run_checked(sc, SwapThenBalloon())
    f = faults(result)
    assert f["host_swap_out"] > 0
    assert f["double_paging"] > 0
    assert f["double_paging"] <= f["guest_page_out"]
    assert f["double_paging"] <= f["host_swap_in"]

    # without host swapping there is nothing to double-page
    class BalloonOnly(SwapThenBalloon):
        def on_epoch(self, host):
            return Decisions(vms={"vm": VMDecision(balloon_mb=200)} if host.epoch >= 3 else {})

    f = faults(run_checked(sc, BalloonOnly()))
    assert f["guest_page_out"] > 0 and f["double_paging"] == 0


def _identical_vms(n, write_phase=False, **vm_kw):
    phases = [Phase(kind="scan", footprint_mb=64, refs=64 * 256 * 3, write_ratio=0.0, compute_ns=500,
                    content=ContentMix(zero=0.0, shared=1.0, compressible=0.0)),
              Phase(kind="idle", duration_s=4)]
    if write_phase:
        phases.append(Phase(kind="scan", footprint_mb=64, refs=64 * 256, write_ratio=1.0, compute_ns=500,
                            content=ContentMix(zero=0.0, shared=1.0, compressible=0.0)))
        phases.append(Phase(kind="idle", duration_s=10))
    return [vm(name=f"vm{i}", memory_mb=128, os_mb=4, os_image="img", os_image_mb=4096, phases=phases,
               os_content=ContentMix(0.0, 0.0, 0.0), **vm_kw) for i in range(n)]


def test_sharing_merges_identical_pages_across_vms_and_a_write_breaks_the_share():
    sc = scenario(_identical_vms(2, write_phase=True), host_mb=1024, duration_s=10, epoch_s=0.5)
    sharing = HostDecision(sharing_pages_per_s=200_000, sharing_scan="random")
    result = run_checked(sc, FixedPolicy(host=sharing))
    series = result.series["host"]["sharing_saved_mb"]
    # identical 64 MB footprints: one VM's copy is saved entirely (the hash space is large, so
    # nearly no page shares with another page of its own VM)
    assert max(series) == pytest.approx(64, rel=0.1)
    f0, f1 = faults(result, "vm0"), faults(result, "vm1")
    assert f0["cow_break"] + f1["cow_break"] > 0
    assert series[-1] < 0.2 * max(series)   # everything was written: nothing identical remains
    no_sharing = run_checked(sc, FixedPolicy())
    assert no_sharing.summary["host"]["sharing_saved_mb_peak"] == 0
    assert result.summary["host"]["mean_used_mb"] < no_sharing.summary["host"]["mean_used_mb"]


def test_salting_limits_sharing_to_pages_within_one_vm():
    sc = scenario(_identical_vms(3), host_mb=1024, duration_s=4, epoch_s=0.5)
    shared = run_checked(sc, FixedPolicy(host=HostDecision(sharing_pages_per_s=200_000, sharing_salted=False)))
    salted = run_checked(sc, FixedPolicy(host=HostDecision(sharing_pages_per_s=200_000, sharing_salted=True)))
    assert shared.summary["host"]["sharing_saved_mb_peak"] == pytest.approx(128, rel=0.1)
    assert salted.summary["host"]["sharing_saved_mb_peak"] < 0.05 * 128


def test_zero_pages_all_share_one_frame():
    phases = [Phase(kind="scan", footprint_mb=32, refs=32 * 256, write_ratio=0.0, compute_ns=500,
                    content=ContentMix(zero=1.0, shared=0.0)), Phase(kind="idle", duration_s=5)]
    sc = scenario([vm(memory_mb=64, os_mb=4, phases=phases, os_content=ContentMix(0, 0, 0))], duration_s=3, epoch_s=0.5)
    result = run_checked(sc, FixedPolicy(host=HostDecision(sharing_pages_per_s=100_000, sharing_salted=True)))
    assert result.summary["host"]["sharing_saved_mb_peak"] == pytest.approx(32, abs=0.1)


def test_balloon_takes_free_pages_before_the_guest_pages_anything():
    phases = [Phase(kind="scan", footprint_mb=100, refs=100 * 256, write_ratio=1.0, free_on_end=True),
              Phase(kind="idle", duration_s=100)]
    sc = scenario([vm(memory_mb=256, os_mb=8, phases=phases)], duration_s=4, epoch_s=1)

    class LateBalloon(Policy):
        name = "late-balloon"

        def on_epoch(self, host):
            return Decisions(vms={"vm": VMDecision(balloon_mb=90)} if host.epoch >= 2 else {})

    result = run_checked(sc, LateBalloon())
    s = vm_summary(result)
    assert s["faults"]["guest_page_out"] == 0
    assert s["ballooned_peak_mb"] == pytest.approx(90)
    # the freed memory stayed backed on the host until the balloon took it
    resident = result.series["vms"]["vm"]["resident_mb"]
    assert resident[1] > resident[-1] + 80


def test_compression_keeps_compressible_victims_in_a_capped_cache():
    phase = Phase(kind="uniform", footprint_mb=150, duration_s=10, write_ratio=0.0, compute_ns=1000,
                  content=ContentMix(zero=0.0, shared=0.0, compressible=1.0))
    sc = scenario([vm(memory_mb=256, os_mb=8, phases=[phase])], duration_s=10, epoch_s=1)
    decision = VMDecision(host_limit_mb=100, host_swap=True, compression=True)
    result = run_checked(sc, FixedPolicy(per_vm={"vm": decision}))
    f = faults(result)
    s = vm_summary(result)
    assert f["compression"] > 0 and f["decompression"] > 0
    # ESX caps the cache at 10% of the VM's memory; what does not fit goes to swap
    assert result.summary["host"]["compression_cache_peak_mb"] <= 25.6 + 1e-9
    assert f["host_swap_out"] > 0
    assert s["compressed_peak_mb"] > 0


def test_hot_add_grows_what_the_guest_can_use():
    phase = Phase(kind="uniform", footprint_mb=200, duration_s=12, write_ratio=0.1)
    sc = scenario([vm(memory_mb=256, startup_mb=64, minimum_mb=64, maximum_mb=256, os_mb=8, phases=[phase])],
                  duration_s=12, epoch_s=1)

    class GrowAtThree(Policy):
        name = "grow"

        def on_epoch(self, host):
            return Decisions(vms={"vm": VMDecision(assigned_mb=256)} if host.epoch == 3 else {})

    result = run_checked(sc, GrowAtThree())
    assigned = result.series["vms"]["vm"]["assigned_mb"]
    reads = result.series["vms"]["vm"]["guest_pagefile_read"]
    assert assigned[0] == 64 and assigned[-1] == 256
    assert reads[1] > 0 and reads[-1] == 0    # paging stops once the working set fits


def test_smart_paging_backs_a_restart_and_is_released():
    # "small" is ballooned down to its minimum; "hog" starts and takes the rest of the host; then
    # "small" restarts and needs its startup memory, which neither the host nor anyone else has
    small = vm(name="small", memory_mb=256, startup_mb=256, minimum_mb=64, maximum_mb=256, os_mb=8,
               phases=[Phase(kind="uniform", footprint_mb=150, duration_s=100, write_ratio=0.2)],
               events=(Event(0.0, "start"), Event(3.0, "restart")))
    hog = vm(name="hog", memory_mb=420, os_mb=8,
             phases=[Phase(kind="scan", footprint_mb=400, refs=400 * 256 * 2, write_ratio=1.0, compute_ns=200),
                     Phase(kind="idle", duration_s=100)],
             events=(Event(1.0, "start"),))
    sc = Scenario(host=Host(memory_mb=500, vm_overhead_mb=0), vms=(small, hog), duration_s=12, epoch_s=1, seed=5)

    class Restart(Policy):
        name = "restart-test"

        def admit(self, host, vm, restart):
            if vm.name == "small" and restart:
                return Admission(True, assigned_mb=256, smart_paging_mb=192)
            return Admission(True)

        def on_epoch(self, host):
            d = Decisions()
            if host.epoch in (1, 2):
                d.vms["small"] = VMDecision(balloon_mb=192)
            elif host.epoch >= 7:
                d.vms["small"] = VMDecision(balloon_mb=180, smart_paging_mb=0)
            return d

    result = run_checked(sc, Restart())
    s = vm_summary(result, "small")
    assert s["faults"]["smart_paging_out"] > 0
    assert s["smart_paged_peak_mb"] > 0
    smart = result.series["host"]["smart_paging_mb"]
    assert smart[:3] == [0, 0, 0]            # not for the cold start, nor while running
    assert max(smart[3:7]) > 0               # only after the restart
    assert smart[-1] == 0                     # gone once the VM has ballooned down
    assert s["faults"]["host_swap_out"] == 0 and vm_summary(result, "hog")["faults"]["host_swap_out"] == 0


def test_a_vm_larger_than_its_host_share_is_blocked_not_crashed_when_nothing_can_be_reclaimed():
    phase = Phase(kind="uniform", footprint_mb=300, duration_s=5, write_ratio=0.1)
    sc = scenario([vm(memory_mb=512, os_mb=8, phases=[phase])], host_mb=600, duration_s=3, epoch_s=1)
    result = run_checked(sc, FixedPolicy(per_vm={"vm": VMDecision(host_limit_mb=100, host_swap=False)}))
    s = vm_summary(result)
    assert s["blocked_s"] > 2
    assert s["state"] == "blocked"


def test_policy_decisions_are_validated_with_the_policy_named():
    from service.engine import PolicyError

    class Bad(Policy):
        name = "bad-plugin"

        def on_epoch(self, host):
            return Decisions(vms={"vm": VMDecision(balloon_mb=-5)})

    sc = scenario([vm(phases=[SKEWED])], duration_s=1, epoch_s=1)
    with pytest.raises(PolicyError, match="bad-plugin.*balloon_mb"):
        simulate(sc, Bad())


def test_untrusting_policy_never_sees_guest_reports():
    seen = []

    class Peek(Policy):
        name = "peek"

        def on_epoch(self, host):
            seen.extend(v.guest for v in host.vms)
            return Decisions()

    class TrustingPeek(Peek):
        name = "trusting-peek"
        trusts_guest = True

    sc = scenario([vm(phases=[SKEWED])], duration_s=2, epoch_s=1)
    simulate(sc, Peek())
    assert seen and all(g is None for g in seen)
    seen.clear()
    simulate(sc, TrustingPeek())
    assert seen[-1] is not None and seen[-1].committed_mb > 0
