"""Scenario documents: a full document loads into the config dataclasses, and every kind of
mistake is reported with the path of the field as written in the document."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from service.engine.config import DEVICE_PRESETS, VM, ContentMix, Costs, Device, Event, Phase, Scenario
from service.scenario import (
    ScenarioValidationError, load_scenario, load_scenario_file, scenario_to_dict,
)


def full_document(trace_path: str) -> dict:
    """Every field of the format, set to a non-default value."""
    return {
        "name": "consolidation",
        "description": "two web servers and a database",
        "duration_s": 120,
        "seed": 7,
        "epoch_s": 0.5,
        "slice_ms": 2,
        "host": {
            "memory_mb": 16384,
            "reserve_mb": 1024,
            "vm_overhead_mb": 48,
            "swap_device": "fast",
            "devices": {
                "fast": {"read_us": 15, "write_us": 12.5, "parallelism": 64},
                "backup": "hdd",
            },
            "costs": {"guest_fault_us": 1.5, "zero_fill_us": 2.5, "cow_break_us": 3.5,
                      "compress_us": 11, "decompress_us": 9},
        },
        "vms": [
            {
                "name": "web",
                "memory_mb": 4096,
                "startup_mb": 2048,
                "minimum_mb": 1024,
                "maximum_mb": 6144,
                "buffer_pct": 25,
                "weight": 7000,
                "reservation_mb": 512,
                "limit_mb": 3072,
                "shares": 20000,
                "os_image": "win2019",
                "os_mb": 700,
                "os_image_mb": 900,
                "os_content": {"zero": 0.3, "shared": 0.4, "compressible": 0.6},
                "replacement": "clock",
                "pagefile_mb": 8192,
                "pagefile_device": "backup",
                "smart_paging_device": "fast",
                "balloon_driver": False,
                "workload": {
                    "phases": [
                        {"kind": "idle", "duration_s": 10},
                        {"kind": "zipf", "duration_s": 50, "refs": 1000000, "footprint_mb": 1500,
                         "offset_mb": 100, "write_ratio": 0.4, "compute_ns": 500, "zipf_s": 1.2,
                         "free_on_end": True,
                         "content": {"zero": 0.1, "shared": 0.2, "compressible": 0.7}},
                        {"kind": "hotcold", "refs": 5000, "footprint_mb": 800, "hot_fraction": 0.1,
                         "hot_probability": 0.9},
                        {"kind": "trace", "trace": trace_path, "trace_loops": 3},
                    ],
                    "repeat": True,
                },
                "events": [{"at_s": 0, "action": "start"}, {"at_s": 60, "action": "restart"},
                           {"at_s": 100, "action": "stop"}],
            },
            {"name": "db", "memory_mb": 4096},
        ],
        "policies": [{"name": "esx", "params": {"idle_tax": 0.5}}, {"name": "static"}],
    }


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.txt"
    path.write_text("0\n1\n0\n")
    return path


@pytest.fixture
def minimal() -> dict:
    return {"duration_s": 10, "host": {"memory_mb": 8192},
            "vms": [{"name": "a", "memory_mb": 2048,
                     "workload": {"phases": [{"kind": "uniform", "duration_s": 10, "footprint_mb": 512}]}}]}


def problems(doc: dict, base_dir: Path | None = None) -> dict[str, list[str]]:
    with pytest.raises(ScenarioValidationError) as caught:
        load_scenario(doc, base_dir)
    return caught.value.errors


# --- loading ---------------------------------------------------------------------------------

def test_full_document(trace_file):
    scenario, policies = load_scenario(full_document(str(trace_file)))
    assert isinstance(scenario, Scenario)
    assert (scenario.name, scenario.duration_s, scenario.seed, scenario.epoch_s, scenario.slice_ms) == \
        ("consolidation", 120.0, 7, 0.5, 2.0)
    host = scenario.host
    assert host.devices == {"fast": Device(15.0, 12.5, 64), "backup": DEVICE_PRESETS["hdd"]}
    assert host.costs == Costs(1.5, 2.5, 3.5, 11.0, 9.0)
    assert (host.memory_mb, host.reserve_mb, host.vm_overhead_mb, host.swap_device) == (16384, 1024, 48, "fast")

    web, db = scenario.vms
    assert (web.startup, web.minimum, web.maximum, web.limit, web.effective_shares) == (2048, 1024, 6144, 3072, 20000)
    assert web.os_content == ContentMix(0.3, 0.4, 0.6)
    assert (web.replacement, web.pagefile_device, web.smart_paging_device, web.balloon_driver) == \
        ("clock", "backup", "fast", False)
    assert web.repeat is True
    assert [p.kind for p in web.phases] == ["idle", "zipf", "hotcold", "trace"]
    zipf = web.phases[1]
    assert zipf == Phase(kind="zipf", duration_s=50.0, refs=1000000, footprint_mb=1500.0, offset_mb=100.0,
                         write_ratio=0.4, compute_ns=500.0, zipf_s=1.2, free_on_end=True,
                         content=ContentMix(0.1, 0.2, 0.7))
    assert web.phases[3].trace == str(trace_file) and web.phases[3].trace_loops == 3
    assert web.events == (Event(0.0, "start"), Event(60.0, "restart"), Event(100.0, "stop"))

    assert db == VM(name="db", memory_mb=4096)       # every field left out takes the dataclass default
    assert policies == [{"name": "esx", "params": {"idle_tax": 0.5}}, {"name": "static", "params": {}}]


def test_events_that_change_a_run(minimal):
    minimal["vms"][0]["events"] = [{"at_s": 0, "action": "start"}, {"at_s": 5, "action": "load_balloon_driver"}]
    minimal["policy_events"] = [{"at_s": 4, "policy": "esx", "params": {"idle_tax_pct": 90, "sample_pages": 50}}]
    scenario, _ = load_scenario(minimal)
    vm = scenario.vms[0]
    assert vm.events[1] == Event(5.0, "load_balloon_driver")
    assert vm.balloon_driver and not vm.balloon_driver_at_boot
    (event,) = scenario.policy_events
    assert (event.at_s, event.policy, event.changes) == (4.0, "esx", {"idle_tax_pct": 90, "sample_pages": 50})
    again, _ = load_scenario(scenario_to_dict(scenario))
    assert again == scenario


def test_bad_policy_events_name_the_field(minimal):
    minimal["policy_events"] = [{"at_s": 11, "policy": "esx", "params": {"idle_tax_pct": 9}},
                                {"at_s": 1, "policy": "esx", "params": {}}, {"at_s": 1, "params": {"a": 1}}]
    found = problems(minimal)
    assert "policy_events[1].params" in found and "policy_events[2].policy" in found
    minimal["policy_events"] = [{"at_s": 11, "policy": "esx", "params": {"idle_tax_pct": 9}}]
    assert "within the run" in problems(minimal)["policy_events[0].at_s"][0]


def test_a_vm_with_count_is_replicated(minimal):
    minimal["vms"][0].update(count=3, stagger_s=5)
    minimal["vms"].append({"name": "db", "memory_mb": 512})
    scenario, _ = load_scenario(minimal)
    assert [vm.name for vm in scenario.vms] == ["a-1", "a-2", "a-3", "db"]
    assert [vm.events for vm in scenario.vms[:3]] == [(Event(0.0, "start"),), (Event(5.0, "start"),),
                                                     (Event(10.0, "start"),)]
    assert scenario.vms[2].phases == scenario.vms[0].phases and scenario.vms[2].memory_mb == 2048
    again, _ = load_scenario(scenario_to_dict(scenario))           # the snapshot is explicit
    assert again == scenario


def test_problems_of_a_replicated_vm_name_its_entry(minimal):
    minimal["vms"] = [{"name": "x", "memory_mb": 512},
                      {**minimal["vms"][0], "count": 2, "os_mb": 4096},
                      {"name": "a-2", "memory_mb": 512}]
    found = problems(minimal)
    assert "vms[1].os_mb" in found
    minimal["vms"][1]["os_mb"] = 64
    assert "duplicate VM name 'a-2'" in problems(minimal)["vms[2].name"][0]
    minimal["vms"][1]["count"] = 0
    assert "vms[1].count" in problems(minimal)


def test_omitted_fields_take_the_dataclass_defaults(minimal):
    scenario, policies = load_scenario(minimal)
    assert scenario.host.costs == Costs() and scenario.host.swap_device == "ssd"
    assert scenario.vms[0].events == (Event(0.0, "start"),)
    assert scenario.vms[0].phases[0].content == ContentMix()
    assert policies == []


def test_partial_os_content_keeps_the_vm_os_defaults(minimal):
    minimal["vms"][0]["os_content"] = {"zero": 0.1}
    os_default = VM(name="x", memory_mb=1).os_content
    assert load_scenario(minimal)[0].vms[0].os_content == ContentMix(0.1, os_default.shared, os_default.compressible)


def test_preset_device_names_need_no_declaration(minimal):
    minimal["host"]["swap_device"] = "nvme"
    minimal["vms"][0]["pagefile_device"] = "hdd"
    scenario, _ = load_scenario(minimal)
    assert scenario.host.device("nvme") == DEVICE_PRESETS["nvme"]


def test_trace_paths_are_relative_to_the_scenario_file(tmp_path, minimal):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.txt").write_text("0\n1\n")
    minimal["vms"][0]["workload"]["phases"] = [{"kind": "trace", "trace": "traces/t.txt"}]
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(minimal))
    scenario, _ = load_scenario_file(path)
    assert scenario.vms[0].phases[0].trace == str(tmp_path / "traces" / "t.txt")


def test_missing_trace_file(tmp_path, minimal):
    minimal["vms"][0]["workload"]["phases"].append({"kind": "trace", "trace": "gone.txt.gz"})
    errors = problems(minimal, base_dir=tmp_path)
    assert list(errors) == ["vms[0].workload.phases[1].trace"]
    assert str(tmp_path / "gone.txt.gz") in errors["vms[0].workload.phases[1].trace"][0]


def test_round_trip(trace_file):
    scenario, _ = load_scenario(full_document(str(trace_file)))
    doc = scenario_to_dict(scenario)
    assert json.loads(json.dumps(doc)) == doc
    assert list(doc)[:3] == ["name", "description", "duration_s"]
    assert "workload" in doc["vms"][0] and "phases" not in doc["vms"][0]
    assert load_scenario(doc)[0] == scenario


# --- mistakes, each named by its path ---------------------------------------------------------

MISTAKES = [
    # (where to change the minimal document, value, path in the error, words in the message)
    (("host", "memory_mb"), -1, "host.memory_mb", "greater than or equal to 1"),
    (("vms", 0, "memory_mb"), 0, "vms[0].memory_mb", "greater than or equal to 1"),
    (("vms", 0, "memory_mb"), 9000, "vms[0].memory_mb", "needs up to 9000 MB but the host has"),
    (("vms", 0, "memory_mb"), "2048", "vms[0].memory_mb", "Not a valid integer"),
    (("vms", 0, "memory_mb"), 2048.5, "vms[0].memory_mb", "Not a valid integer"),
    (("vms", 0, "memory_mb"), True, "vms[0].memory_mb", "Not a valid integer"),
    (("host", "swap_device"), "tape", "host.swap_device", "unknown device 'tape'"),
    (("vms", 0, "pagefile_device"), "tape", "vms[0].pagefile_device", "unknown device 'tape'"),
    (("host", "devices"), {"slow": "floppy"}, "host.devices.slow", "unknown preset 'floppy'"),
    (("host", "devices"), {"x": {"read_us": 0, "write_us": 5}}, "host.devices.x.read_us", "greater than 0"),
    (("host", "devices"), {"x": {"read_us": 5}}, "host.devices.x.write_us", "Missing data"),
    (("host", "devices"), {"x": 5}, "host.devices.x", "preset name"),
    (("host", "devices"), ["ssd"], "host.devices", "mapping device names"),
    (("vms", 0, "workload", "phases", 0, "kind"), "random", "vms[0].workload.phases[0].kind", "Must be one of"),
    (("vms", 0, "workload", "phases", 0, "footprint_mb"), 0, "vms[0].workload.phases[0].footprint_mb", "must be positive"),
    (("vms", 0, "workload", "phases", 0, "footprint_mb"), -5, "vms[0].workload.phases[0].footprint_mb", "greater than or equal to 0"),
    (("vms", 0, "workload", "phases", 0, "write_ratio"), 1.5, "vms[0].workload.phases[0].write_ratio", "less than or equal to 1"),
    (("vms", 0, "workload", "phases", 0, "content"), {"zero": 1.2}, "vms[0].workload.phases[0].content.zero", "less than or equal to 1"),
    (("vms", 0, "workload", "phases", 0, "content"), {"zero": 0.6, "shared": 0.6}, "vms[0].workload.phases[0].content", "must not exceed 1"),
    (("vms", 0, "os_content"), {"shared": 0.9}, "vms[0].os_content", "must not exceed 1"),
    (("vms", 0, "workload", "phases", 0, "trace"), "x.txt", "vms[0].workload.phases[0].trace", "only a phase of kind 'trace'"),
    (("vms", 0, "workload", "phases", 0, "duration_s"), None, "vms[0].workload.phases[0]", "needs duration_s or refs"),
    (("vms", 0, "workload", "phases", 0, "zipf_s"), float("nan"), "vms[0].workload.phases[0].zipf_s", "nan or infinity"),
    (("vms", 0, "workload", "colour"), "blue", "vms[0].workload.colour", "Unknown field"),
    (("vms", 0, "phases"), [], "vms[0].phases", "Unknown field"),
    (("colour",), "blue", "colour", "Unknown field"),
    (("host", "costs"), {"zero_fill_us": -1}, "host.costs.zero_fill_us", "greater than or equal to 0"),
    (("vms", 0, "weight"), 20000, "vms[0].weight", "less than or equal to 10000"),
    (("vms", 0, "buffer_pct"), 3, "vms[0].buffer_pct", "greater than or equal to 5"),
    (("vms", 0, "replacement"), "lfu", "vms[0].replacement", "Must be one of"),
    (("vms", 0, "balloon_driver"), 1, "vms[0].balloon_driver", "Not a valid boolean"),
    (("vms", 0, "minimum_mb"), 4096, "vms[0].minimum_mb", "minimum_mb <= startup_mb"),
    (("vms", 0, "events"), [{"at_s": 0, "action": "boot"}], "vms[0].events[0].action", "Must be one of"),
    (("vms", 0, "events"), [{"at_s": 99, "action": "start"}], "vms[0].events[0].at_s", "within the run"),
    (("vms", 0, "events"), [{"action": "start"}], "vms[0].events[0].at_s", "Missing data"),
    (("vms",), [], "vms", "at least one VM"),
    (("duration_s",), 0, "duration_s", "greater than 0"),
    (("epoch_s",), 20, "epoch_s", "at most the duration"),
    (("seed",), -1, "seed", "greater than or equal to 0"),
    (("policies",), [{"params": {}}], "policies[0].name", "Missing data"),
    (("policies",), [{"name": "esx", "parms": {}}], "policies[0].parms", "Unknown field"),
]


@pytest.mark.parametrize("where, value, path, words", MISTAKES, ids=[m[2] + ":" + m[3] for m in MISTAKES])
def test_mistake_names_its_field(minimal, where, value, path, words):
    doc = copy.deepcopy(minimal)
    target = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    errors = problems(doc)
    assert path in errors, errors
    assert any(words in message for message in errors[path]), errors[path]


def test_duplicate_vm_names(minimal):
    minimal["vms"].append(dict(minimal["vms"][0], memory_mb=1024))
    assert "duplicate VM name 'a'" in problems(minimal)["vms[1].name"][0]


def test_vm_larger_than_host_counts_the_reserve(minimal):
    minimal["host"]["reserve_mb"] = 1024
    minimal["vms"][0]["memory_mb"] = 7500
    message = problems(minimal)["vms[0].memory_mb"][0]
    assert "7500 MB" in message and "7168 MB" in message


def test_every_field_problem_is_reported_at_once(minimal):
    minimal["duration_s"] = -1
    minimal["host"]["memory_mb"] = "lots"
    minimal["vms"][0]["workload"]["phases"][0]["kind"] = "zap"
    minimal["vms"].append({"memory_mb": 512})
    errors = problems(minimal)
    assert set(errors) == {"duration_s", "host.memory_mb", "vms[0].workload.phases[0].kind", "vms[1].name"}


def test_missing_required_fields():
    errors = problems({})
    assert set(errors) == {"duration_s", "host", "vms"}


def test_document_that_is_not_an_object():
    assert list(problems([1, 2])) == ["(document)"]


def test_error_text_lists_every_problem_as_path_and_message():
    err = ScenarioValidationError({"vms[1].workload.phases[0].footprint_mb": ["Must be positive."],
                                   "host.memory_mb": ["Missing data for required field.", "Other."]})
    assert str(err).splitlines() == [
        "vms[1].workload.phases[0].footprint_mb: Must be positive.",
        "host.memory_mb: Missing data for required field.",
        "host.memory_mb: Other.",
    ]
    assert isinstance(err, ValueError)


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "duration_s": 10,\n  "host": {memory_mb: 1}\n}\n')
    with pytest.raises(ScenarioValidationError) as caught:
        load_scenario_file(path)
    assert str(caught.value).startswith(f"{path}: invalid JSON at line 3 column 12")


def test_missing_scenario_file(tmp_path):
    with pytest.raises(ScenarioValidationError, match="no such file"):
        load_scenario_file(tmp_path / "nowhere.json")
