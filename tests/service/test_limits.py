"""Resource limits of experiments (service.limits): each limit over which create_experiment refuses
a document, naming the field, the limit, its value and its variable, with nothing stored; the
estimates of references and engine memory; the limits come from the environment."""
from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service import db
from service.catalog import store_trace
from service.engine.layout import build
from service.engine.traces import load_trace
from service.experiments import create_experiment
from service.limits import check_limits, estimate_memory_bytes, estimate_refs
from service.models import Experiment, Run
from service.scenario import ROOT, ScenarioValidationError, load_scenario, load_scenario_file
from service.settings import Settings, SettingsError

from .helpers import tiny

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.json"))


def _count(model) -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(model))


def _create(doc, settings: Settings) -> Experiment:
    with db.session_scope() as s:
        return create_experiment(s, doc, settings=settings)


def _refused(doc, settings: Settings, **limits) -> dict[str, list[str]]:
    with pytest.raises(ScenarioValidationError) as info:
        _create(doc, dataclasses.replace(settings, **limits))
    assert _count(Experiment) == 0 and _count(Run) == 0, "a refused experiment stored something"
    return info.value.errors


def _one_vm(**phase) -> dict:
    doc = tiny()
    doc["vms"] = doc["vms"][:1]
    doc["vms"][0]["workload"]["phases"] = [{"kind": "uniform", "footprint_mb": 100, **phase}]
    return doc


# --- each limit over which an experiment is refused ----------------------------------------------

def test_within_the_default_limits_an_experiment_is_stored(settings):
    _create(tiny(), settings)
    assert _count(Experiment) == 1 and _count(Run) == 1


def test_too_many_vms(settings):
    assert _refused(tiny(), settings, max_vms=1) == {"vms": ["1 VMs at most (VMEMLAB_MAX_VMS), got 2"]}
    # counted on the document before it is validated: 300 VMs are not even looked at
    doc = tiny(vms=[{"name": f"vm{i}"} for i in range(300)])
    assert _refused(doc, settings) == {"vms": ["256 VMs at most (VMEMLAB_MAX_VMS), got 300"]}


def test_too_long(settings):
    errors = _refused(tiny(duration_s=100_000), settings)
    assert errors["duration_s"] == ["86400 s at most (VMEMLAB_MAX_DURATION_S), got 100000 s"]
    assert _refused(tiny(duration_s=2.5), settings, max_duration_s=2.0) == {
        "duration_s": ["2 s at most (VMEMLAB_MAX_DURATION_S), got 2.5 s"]}


def test_too_many_epochs(settings):
    errors = _refused(tiny(), settings, max_epochs=3)          # 2 s in epochs of 0.5 s
    assert errors == {"epoch_s": ["the run would have 4 epochs (duration_s / epoch_s); the limit is 3 "
                                  "(VMEMLAB_MAX_EPOCHS)"]}
    errors = _refused(tiny(duration_s=3600, epoch_s=0.001), settings)
    assert "3600000 epochs" in errors["epoch_s"][0] and "1000000 (VMEMLAB_MAX_EPOCHS)" in errors["epoch_s"][0]


def test_too_many_references(settings):
    # one reference per nanosecond for a day: 8.64e13 references
    errors = _refused(_one_vm(duration_s=86400, compute_ns=1) | {"duration_s": 86400}, settings)
    assert errors == {ROOT: ["the run would simulate about 8.64e13 references; the limit is 5e10 "
                             "(VMEMLAB_MAX_REFS)"]}
    errors = _refused(tiny(), settings, max_refs=1_000_000)     # 2 VMs x 2 s / 1 us, plus the boots
    assert "about 4008192 references; the limit is 1000000 (VMEMLAB_MAX_REFS)" in errors[ROOT][0]
    # a phase bounded by its refs is counted by them
    _create(_one_vm(duration_s=86400, compute_ns=1, refs=1000) | {"duration_s": 86400}, settings)


def test_too_much_engine_memory(settings):
    errors = _refused(tiny(), settings, max_sim_memory_mb=2)
    assert errors == {ROOT: ["the simulation would need about 2.664 MB of engine state; the limit is 2 MB "
                             "(VMEMLAB_MAX_SIM_MEMORY_MB)"]}


def test_every_limit_over_is_reported_at_once(settings):
    errors = _refused(tiny(), settings, max_duration_s=1, max_epochs=1, max_refs=1, max_sim_memory_mb=1)
    assert set(errors) == {"duration_s", "epoch_s", ROOT}
    assert len(errors[ROOT]) == 2


def test_a_trace_phase_counts_its_length_times_its_loops(settings):
    with db.session_scope() as s:
        trace = store_trace(s, "t", gzip.compress(b"\n".join(str(i % 500).encode() for i in range(10_000))))
        trace_id = trace.id
    doc = _one_vm()
    doc["vms"][0]["workload"]["phases"] = [{"kind": "trace", "trace_id": trace_id, "trace_loops": 20,
                                            "compute_ns": 1}]
    errors = _refused(doc, settings, max_refs=150_000)          # 2e5 trace references + 8192 at boot
    assert "about 208192 references" in errors[ROOT][0]
    _create(doc, dataclasses.replace(settings, max_refs=210_000))
    assert _count(Experiment) == 1


# --- the estimates -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_the_shipped_scenarios_are_within_the_defaults_and_memory_is_exact(path, tmp_path):
    scenario, _ = load_scenario_file(path)
    check_limits(scenario, Settings(data_dir=tmp_path, database_url="sqlite://"))
    state = build(scenario, load_trace)
    frame_arrays = (state.frame_page, state.lru_prev, state.lru_next, state.host_state, state.flags)
    allocated = state.page_table.nbytes + sum(a.nbytes for a in frame_arrays) + 4 * len(state.frame_page)  # + fifo
    assert estimate_memory_bytes(scenario) == allocated


def test_references_follow_the_phases_in_order():
    doc = _one_vm(duration_s=1.0, compute_ns=100)               # 1e7 references in 1 s
    doc["vms"][0]["os_mb"] = 1                                  # 256 at boot, 500 ns each
    doc["vms"][0]["workload"]["phases"] += [{"kind": "idle", "duration_s": 0.5},
                                            {"kind": "scan", "footprint_mb": 10, "refs": 5000, "compute_ns": 100}]
    doc.update(duration_s=10.0, epoch_s=1.0)
    assert estimate_refs(load_scenario(doc)[0]) == pytest.approx(256 + 1e7 + 5000)
    # repeated, the phases start over until the run ends: 6 whole rounds of 1.5005 s, then most
    # of the first phase again
    doc["vms"][0]["workload"]["repeat"] = True
    left_ns = 10e9 - 256 * 500 - 6 * 1.5005e9
    assert estimate_refs(load_scenario(doc)[0]) == pytest.approx(256 + 6 * (1e7 + 5000) + left_ns / 100)


def test_a_trace_phase_uses_its_sizes(tmp_path):
    (tmp_path / "t.txt").write_text("".join(f"{i % 40}\n" for i in range(1000)))
    doc = _one_vm()
    doc["vms"][0]["os_mb"] = 1
    doc["vms"][0]["workload"]["phases"] = [{"kind": "trace", "trace": "t.txt", "trace_loops": 3, "compute_ns": 1}]
    doc.update(duration_s=10.0, epoch_s=1.0)
    scenario, _ = load_scenario(doc, base_dir=tmp_path)
    sizes = lambda i, j: (1000, 40) if (i, j) == (0, 0) else None  # noqa: E731
    assert estimate_refs(scenario, sizes) == 256 + 3000
    frames, pages = 256 * 256, 256 + 40
    assert estimate_memory_bytes(scenario, sizes) == 18 * frames + 4 * pages + 4 * 1000
    state = build(scenario, load_trace)
    assert len(state.page_table) == pages and len(state.frame_page) == frames and len(state.traces) == 1000


# --- configuration -------------------------------------------------------------------------------

def test_limits_come_from_the_environment(tmp_path):
    s = Settings.from_env({"VMEMLAB_DATA_DIR": str(tmp_path)})
    assert (s.max_vms, s.max_duration_s, s.max_epochs, s.max_refs, s.max_sim_memory_mb) == (
        256, 86400.0, 1_000_000, 50_000_000_000, 4096)
    s = Settings.from_env({"VMEMLAB_DATA_DIR": str(tmp_path), "VMEMLAB_MAX_VMS": "8",
                           "VMEMLAB_MAX_DURATION_S": "600", "VMEMLAB_MAX_EPOCHS": "1e4",
                           "VMEMLAB_MAX_REFS": "2.5e9", "VMEMLAB_MAX_SIM_MEMORY_MB": "1_024"})
    assert (s.max_vms, s.max_duration_s, s.max_epochs, s.max_refs, s.max_sim_memory_mb) == (
        8, 600.0, 10_000, 2_500_000_000, 1024)


@pytest.mark.parametrize("name, value", [("VMEMLAB_MAX_VMS", "0"), ("VMEMLAB_MAX_VMS", "1.5"),
                                         ("VMEMLAB_MAX_REFS", "lots"), ("VMEMLAB_MAX_REFS", "inf"),
                                         ("VMEMLAB_MAX_DURATION_S", "-1"), ("VMEMLAB_MAX_SIM_MEMORY_MB", "0")])
def test_bad_limits_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
