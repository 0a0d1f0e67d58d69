"""Capacity search (issue 11): the largest number of copies of a VM that a policy runs within an
SLA. Differential against the static admission arithmetic, the search itself on fake oracles,
the VDI density reference, and the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from service.capacity import SLA, Probe, capacity_search, search, with_copies
from service.cli import main
from service.engine import Host, Phase, Scenario, VM
from service.policies import load_policy
from service.scenario import load_scenario_file

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def small(host_mb: int, vm_mb: int, overhead: int, other_mb: int = 0) -> Scenario:
    idle = (Phase(kind="idle", duration_s=1.0),)
    vms = [VM(name="app", memory_mb=vm_mb, os_mb=8, phases=idle)]
    if other_mb:
        vms.insert(0, VM(name="db", memory_mb=other_mb, os_mb=8, phases=idle))
    return Scenario(host=Host(memory_mb=host_mb, vm_overhead_mb=overhead), vms=tuple(vms), duration_s=1.0)


@pytest.mark.parametrize("host_mb,vm_mb,overhead,other_mb", [
    (2048, 256, 0, 0), (2048, 256, 32, 0), (3000, 500, 32, 700), (6144, 4096, 32, 0), (6144, 1000, 7, 1500),
    (1024, 300, 0, 0),
])
def test_static_capacity_is_the_admission_arithmetic(host_mb, vm_mb, overhead, other_mb):
    scenario = small(host_mb, vm_mb, overhead, other_mb)
    left = host_mb - (other_mb + overhead if other_mb else 0)
    expected = left // (vm_mb + overhead)
    found = capacity_search(scenario, "app", load_policy("static"), {}, SLA(1.5), max_count=64)
    assert found.count == expected
    assert found.limited_by == ("refused" if expected < 64 else "bound")
    assert all(p.ok == (p.count <= expected) for p in found.probes)


@settings(max_examples=200, deadline=None)
@given(boundary=st.integers(0, 2000), bound=st.integers(1, 2000))
def test_the_search_finds_a_monotone_boundary_in_logarithmic_probes(boundary, bound):
    asked = []

    def oracle(n: int) -> Probe:
        asked.append(n)
        return Probe(n, n <= boundary, 1.0 + n / 1000, "" if n <= boundary else "sla")

    found = search(oracle, bound)
    assert found.count == min(boundary, bound)
    assert found.limited_by == ("bound" if boundary >= bound else "sla")
    assert found.non_monotone == [] and len(asked) == len(set(asked))
    assert len(asked) <= 2 * math.ceil(math.log2(bound + 1)) + 3
    if boundary < bound:        # the answer is shown: n fits, n + 1 does not
        assert {found.count + 1} <= {p.count for p in found.probes if not p.ok}
        assert found.count == 0 or found.count in {p.count for p in found.probes if p.ok}


def test_the_search_reports_results_that_are_not_monotone():
    fits = {1, 2, 3, 4, 5, 7}                     # 6 fails, 7 fits again: noise, or a policy's oddity
    found = search(lambda n: Probe(n, n in fits, 1.0, "" if n in fits else "sla"), 100)
    assert found.count == 5 and found.non_monotone == [7]


def test_copies_replace_the_vm_and_keep_the_others():
    scenario = small(4096, 256, 0, other_mb=512)
    three = with_copies(scenario, "app", 3)
    assert [vm.name for vm in three.vms] == ["db", "app-1", "app-2", "app-3"]
    assert [vm.name for vm in with_copies(three, "app", 1).vms] == ["db", "app-1"]
    with pytest.raises(ValueError, match="no VM named 'web'"):
        with_copies(scenario, "web", 1)


def test_vdi_density_by_capacity_search():
    """REFERENCE 6.5 (Kleef 2010), scaled 8x down, as a capacity search on the one-entry VDI
    scenario: static fits 85 desktops, Dynamic Memory about 120 (+40%)."""
    scenario, _ = load_scenario_file(SCENARIOS / "vdi-density.json")
    sla = SLA(max_slowdown=1.05)
    static = capacity_search(scenario, "desktop", load_policy("static"), {}, sla, max_count=150)
    assert (static.count, static.limited_by) == (85, "refused")
    dynamic = capacity_search(scenario, "desktop", load_policy("dynamic-memory"), {}, sla, max_count=150)
    assert 110 <= dynamic.count <= 130 and dynamic.limited_by == "refused"
    assert 0.25 <= dynamic.count / static.count - 1 <= 0.55


def test_the_cli_answers_in_one_line(tmp_path, capfd):
    doc = {"name": "cap", "duration_s": 2, "host": {"memory_mb": 2048, "vm_overhead_mb": 32},
           "vms": [{"name": "web", "memory_mb": 512, "os_mb": 64,
                    "workload": {"phases": [{"kind": "uniform", "footprint_mb": 200, "duration_s": 2}]}}]}
    path = tmp_path / "cap.json"
    path.write_text(json.dumps(doc))
    argv = ["capacity", str(path), "--vm", "web", "--sla", "2", "--policy", "static", "--policy", "overcommit",
            "--max-count", "16", "--jobs", "2"]
    assert main(argv + ["--json"]) == 0
    out, err = capfd.readouterr()
    results = {r["policy"]: r for r in json.loads(out)}
    assert results["static"]["count"] == 2048 // (512 + 32) and results["static"]["limited_by"] == "refused"
    assert {"count", "ok", "worst_slowdown", "reason", "run"} <= set(results["static"]["probes"][0])
    assert "[static] 1 x web: fits" in err
    assert main(argv + ["--quiet"]) == 0
    first = capfd.readouterr().out.splitlines()[0]
    assert first.startswith("On this 2 GB host at <= 2x slowdown, copies of web that fit: static 3, overcommit ")
    assert main(["capacity", str(path), "--vm", "nope", "--sla", "2"]) == 2
    assert "no VM named 'nope'" in capfd.readouterr().err


def test_a_probe_document_is_the_scenario_with_copies():
    """The service builds each probe as a document (service.capacity_searches.probe_document);
    loaded, it is the scenario ``with_copies`` gives, for a VM declared with count and stagger
    between two others, and for a single VM."""
    from service.capacity_searches import probe_document
    from service.scenario import load_scenario, scenario_to_dict

    vm = {"memory_mb": 256, "os_mb": 32, "workload": {"phases": [{"kind": "uniform", "footprint_mb": 100, "duration_s": 60}]}}
    doc = {"duration_s": 60, "host": {"memory_mb": 4096},
           "vms": [{**vm, "name": "first"},
                   {**vm, "name": "web", "count": 3, "stagger_s": 7.5,
                    "events": [{"at_s": 1, "action": "start"}, {"at_s": 20, "action": "restart"}]},
                   {**vm, "name": "last"}]}
    scenario, _ = load_scenario(doc)
    snapshot = scenario_to_dict(scenario)
    for name in ("web", "first"):
        for count in (1, 2, 5):
            probe, _ = load_scenario(probe_document(snapshot, name, count))
            assert probe == with_copies(scenario, name, count), (name, count)
