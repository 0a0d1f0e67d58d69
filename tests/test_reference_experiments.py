"""The reference experiments of shared/REFERENCE.md section 6, run through the built-in policies
exactly as a user would: scenario files from scenarios/, policies through their entry points."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from service.engine import simulate
from service.policies import installed_policies, load_policy
from service.scenario import load_scenario_file

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def load(name: str, **changes):
    scenario, _ = load_scenario_file(SCENARIOS / f"{name}.json")
    return dataclasses.replace(scenario, **changes) if changes else scenario


def run(scenario, policy: str, **params):
    return simulate(scenario, load_policy(policy).create(params))


def vm(result, name):
    return next(v for v in result.summary["vms"] if v["name"] == name)


def total(result, fault):
    return sum(v["faults"][fault] for v in result.summary["vms"])


# --- the seed ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_results():
    scenario = load("seed", duration_s=40)
    return {p: run(scenario, p) for p in ("static", "overcommit", "dynamic-memory", "esx", "kvm")}


def test_seed_static_refuses_the_second_vm(seed_results):
    r = seed_results["static"]
    assert [v["state"] for v in r.summary["vms"]] == ["ran", "refused"]
    assert "needs 4096 MB" in vm(r, "web")["refused_reason"]
    assert r.summary["host"]["overcommit_ratio"] == pytest.approx(4096 / 6144)


def test_seed_overcommit_runs_both_and_pages_at_host_level(seed_results):
    r = seed_results["overcommit"]
    assert [v["state"] for v in r.summary["vms"]] == ["ran", "ran"]
    assert total(r, "host_swap_out") > 10_000 and total(r, "host_swap_in") > 0
    assert total(r, "guest_page_out") == 0            # the guests believe they have 4 GB
    assert r.summary["host"]["overcommit_ratio"] == pytest.approx(8192 / 6144)
    assert r.summary["host"]["peak_used_mb"] <= 6144


def test_seed_dynamic_memory_runs_both_without_host_paging(seed_results):
    r = seed_results["dynamic-memory"]
    assert [v["state"] for v in r.summary["vms"]] == ["ran", "ran"]
    assert total(r, "host_swap_out") == 0 and r.summary["host"]["host_swap_peak_mb"] == 0
    assert total(r, "guest_page_out") > 0              # the guests page instead
    # and at this pressure, trusting the guest costs the VMs less than blind host paging
    assert r.summary["slowdown"] < seed_results["overcommit"].summary["slowdown"]


def test_random_host_victims_avoid_the_double_paging_of_host_lru(seed_results):
    # W02 3.3: ESX swaps random pages "to avoid pathological interaction with the guest's own
    # policy". KVM's host LRU (CLOCK on accessed bits) picks the pages the guest's LRU also
    # finds coldest, so when the balloon makes the guest page, it pages out what the host has
    # already swapped: nearly every host swap-in is double paging.
    def double_share(result):
        return total(result, "double_paging") / max(1, total(result, "host_swap_in"))

    esx, kvm = seed_results["esx"], seed_results["kvm"]
    assert total(kvm, "host_swap_in") > 1000 and total(esx, "host_swap_in") > 1000
    assert double_share(kvm) > 0.9
    assert double_share(esx) < 0.5 * double_share(kvm)


# --- balloon against host swap -------------------------------------------------------------------

def test_ballooning_costs_little_and_host_swap_much_more_worse_on_hdd():
    scenario = load("balloon-vs-swap")
    dbench = scenario.vms[0]
    configured_small = dataclasses.replace(scenario, vms=(dataclasses.replace(dbench, memory_mb=160, limit_mb=None),))
    no_driver = dataclasses.replace(scenario, vms=(dataclasses.replace(dbench, balloon_driver=False),))
    on_hdd = dataclasses.replace(no_driver, host=dataclasses.replace(no_driver.host, swap_device="hdd"))

    static = vm(run(configured_small, "static"), "dbench")
    balloon = vm(run(scenario, "esx"), "dbench")
    swap_ssd = vm(run(no_driver, "esx"), "dbench")
    swap_hdd = vm(run(on_hdd, "esx"), "dbench")

    assert balloon["ballooned_peak_mb"] == pytest.approx(96) and balloon["host_swapped_peak_mb"] == 0
    assert swap_ssd["ballooned_peak_mb"] == 0 and swap_ssd["faults"]["host_swap_in"] > 0
    # W02 Fig. 2: a ballooned VM within a few percent of one configured at that size
    assert balloon["slowdown"] == pytest.approx(static["slowdown"], rel=0.05)
    assert swap_ssd["slowdown"] > 1.1 * balloon["slowdown"]
    assert swap_hdd["slowdown"] > 2 * swap_ssd["slowdown"]


# --- Hyper-V Dynamic Memory ----------------------------------------------------------------------

def test_dynamic_memory_keeps_pressure_near_83_and_never_pages_the_host():
    r = run(load("dm-pressure"), "dynamic-memory")
    assert total(r, "host_swap_out") == 0
    for name in ("vm1", "vm2"):
        pressure = [p for p in r.series["policy"][name]["pressure"][5:] if p]
        assert pressure and all(80 <= p <= 86 for p in pressure), (name, min(pressure), max(pressure))
    # assigned follows committed * 1.2 as the guests grow
    vm1 = r.series["vms"]["vm1"]
    assert vm1["visible_mb"][-1] == pytest.approx(1.2 * vm1["committed_mb"][-1], rel=0.02)
    assert vm1["assigned_mb"][-1] > 2 * 1024


def test_dynamic_memory_weight_decides_who_is_squeezed():
    r = run(load("dm-weight"), "dynamic-memory")
    important, batch = vm(r, "important"), vm(r, "batch")
    assert total(r, "host_swap_out") == 0
    final = r.series["vms"]
    assert final["important"]["visible_mb"][-1] > 2.5 * final["batch"]["visible_mb"][-1]
    assert batch["faults"]["guest_pagefile_read"] > 10 * max(1, important["faults"]["guest_pagefile_read"])
    assert batch["slowdown"] > 2 * important["slowdown"]
    # with equal weights both would be squeezed alike
    equal = load("dm-weight")
    equal = dataclasses.replace(equal, vms=tuple(dataclasses.replace(v, weight=5000) for v in equal.vms))
    even = run(equal, "dynamic-memory").series["vms"]
    assert even["important"]["visible_mb"][-1] == pytest.approx(even["batch"]["visible_mb"][-1], rel=0.1)


def test_smart_paging_only_at_restart_and_released_after_ballooning():
    scenario = load("smart-paging-restart")
    r = run(scenario, "smart-paging")
    smart = r.series["host"]["smart_paging_mb"]
    times = r.series["time_s"]
    before = [s for t, s in zip(times, smart) if t <= 60]
    after = [(t, s) for t, s in zip(times, smart) if t > 60]
    assert max(before) == 0                                   # not for a cold start or a running VM
    assert vm(r, "app")["faults"]["smart_paging_out"] > 0      # the restart used it
    assert r.summary["host"]["smart_paging_peak_mb"] > 0
    gone = next(t for t, s in after if s == 0)
    assert gone - 60 <= 600                                  # gone within 10 minutes
    assert all(s == 0 for t, s in after if t >= gone)
    assert vm(r, "late")["state"] == "refused"                # a cold start on a full host is refused
    assert "restarts only" in vm(r, "late")["refused_reason"]
    assert total(r, "host_swap_out") == 0
    # plain Dynamic Memory cannot restart the VM at all
    plain = run(scenario, "dynamic-memory")
    assert any(e["vm"] == "app" and e["event"] == "refused" for e in plain.events)
    assert plain.summary["host"]["smart_paging_peak_mb"] == 0


# --- every policy on every scenario ---------------------------------------------------------------

POLICIES = sorted(p.name for p in installed_policies())


@pytest.mark.parametrize("scenario_file", sorted(p.stem for p in SCENARIOS.glob("*.json")))
@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_runs_every_scenario(scenario_file, policy):
    scenario = load(scenario_file)
    duration = min(scenario.duration_s, 8.0)
    vms = tuple(dataclasses.replace(v, events=tuple(e for e in v.events if e.at_s <= duration)) for v in scenario.vms)
    short = dataclasses.replace(scenario, vms=vms, duration_s=duration, epoch_s=min(scenario.epoch_s, 1.0))
    result = run(short, policy)
    summary = result.summary
    assert summary["policy"] == policy and len(summary["vms"]) == len(scenario.vms)
    assert summary["host"]["peak_used_mb"] <= scenario.host.memory_mb
    if policy in ("dynamic-memory", "smart-paging", "static"):
        assert summary["host"]["host_swap_peak_mb"] == 0


def test_dynamic_memory_density_matches_the_published_vdi_result():
    # Kleef 2010 (REFERENCE 6.5), scaled 8x down: static 1 GB desktops fit 85 on the host,
    # Dynamic Memory with 512 MB startup about 120 at ~700 MB each (+40%)
    scenario = load("vdi-density")
    static = run(scenario, "static")
    dynamic = run(scenario, "dynamic-memory")
    admitted_static = sum(v["state"] == "ran" for v in static.summary["vms"])
    admitted_dynamic = [v["name"] for v in dynamic.summary["vms"] if v["state"] == "ran"]
    assert admitted_static == 85
    assert 110 <= len(admitted_dynamic) <= 130
    gain = len(admitted_dynamic) / admitted_static - 1
    assert 0.25 <= gain <= 0.55
    series = dynamic.series["vms"]
    settled = [series[n]["visible_mb"][-1] * 8 for n in admitted_dynamic]   # back to full scale
    assert 600 <= sum(settled) / len(settled) <= 800
    assert dynamic.summary["host"]["host_swap_peak_mb"] == 0
    assert all(v["slowdown"] < 1.05 for v in dynamic.summary["vms"] if v["state"] == "ran")
