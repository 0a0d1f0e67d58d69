"""Sweep axes (service/sweep_axes.py): paths into a document, the values an axis takes, the points."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from service.sweep_axes import (
    MAX_VALUES, Axis, AxisError, axis_from_json, axis_from_text, parse_path, point_count, point_document,
    point_label, points, set_at, value_range,
)


def document() -> dict:
    return {
        "name": "doc", "duration_s": 1, "host": {"memory_mb": 1024},
        "vms": [{"name": "web", "memory_mb": 512, "workload": {"phases": [{"kind": "uniform", "footprint_mb": 64}]}},
                {"name": "sql", "memory_mb": 768, "count": 2}],
        "policies": [{"name": "static", "params": {}}, {"name": "esx"}],
    }


def get_at(doc, path: str):
    node = doc
    for step in parse_path(path):
        if isinstance(node, list) and isinstance(step, str):
            node = next(item for item in node if item.get("name") == step)
        else:
            node = node[step]
    return node


# --- paths ----------------------------------------------------------------------------------------

def test_parse_path_reads_names_and_positions():
    assert parse_path("vms[web].workload.phases[0].footprint_mb") == ["vms", "web", "workload", "phases", 0,
                                                                      "footprint_mb"]
    for bad in ("", "host..memory_mb", "vms[]", "1host", None):
        with pytest.raises(AxisError):
            parse_path(bad)


def test_set_at_a_named_entry_changes_only_it():
    doc = document()
    set_at(doc, "vms[sql].memory_mb", 1000)
    assert doc["vms"][1]["memory_mb"] == 1000
    assert doc["vms"][0]["memory_mb"] == 512


def test_set_at_an_indexed_entry():
    doc = document()
    set_at(doc, "vms[0].workload.phases[0].footprint_mb", 128)
    assert doc["vms"][0]["workload"]["phases"][0]["footprint_mb"] == 128
    set_at(doc, "vms[1]", {"name": "other", "memory_mb": 1})
    assert doc["vms"][1] == {"name": "other", "memory_mb": 1}


def test_the_last_key_may_be_new_but_not_a_container_on_the_way():
    doc = document()
    set_at(doc, "host.reserve_mb", 64)
    assert doc["host"]["reserve_mb"] == 64
    with pytest.raises(AxisError, match="host has no 'costs'"):
        set_at(doc, "host.costs.fault_us", 1)


def test_params_are_created_for_a_policy_listed_without_them():
    doc = document()
    set_at(doc, "policies[esx].params.idle_tax_pct", 10)
    assert doc["policies"][1] == {"name": "esx", "params": {"idle_tax_pct": 10}}
    assert doc["policies"][0] == {"name": "static", "params": {}}


def test_paths_that_name_nothing():
    doc = document()
    with pytest.raises(AxisError, match="no entry named 'nope' in vms \\(entries: web, sql\\)"):
        set_at(doc, "vms[nope].count", 1)
    with pytest.raises(AxisError, match="has 2 entries, no \\[5\\]"):
        set_at(doc, "vms[5].count", 1)
    with pytest.raises(AxisError, match="is int"):
        set_at(doc, "host.memory_mb.x", 1)
    assert doc == document()


def test_the_value_is_copied_in():
    doc, value = document(), {"kind": "idle"}
    set_at(doc, "vms[web].workload.phases[0]", value)
    value["kind"] = "changed"
    assert doc["vms"][0]["workload"]["phases"][0] == {"kind": "idle"}


# --- values -----------------------------------------------------------------------------------------

def test_value_range_of_integers_stays_integers():
    assert value_range(1, 7, 2) == (1, 3, 5, 7)
    assert value_range(1, 8, 2) == (1, 3, 5, 7)
    assert value_range(4, 4, 1) == (4,)
    assert all(type(v) is int for v in value_range(1024, 8192, 1024))


def test_value_range_of_floats_lands_on_stop():
    assert value_range(0.1, 0.3, 0.1) == (0.1, 0.2, 0.3)
    assert value_range(0, 1, 0.25) == (0, 0.25, 0.5, 0.75, 1.0)
    assert value_range(0.5, 1.2, 0.5) == (0.5, 1.0)


@pytest.mark.parametrize("start, stop, step, words", [
    (1, 5, 0, "step must be positive"), (1, 5, -1, "step must be positive"), (5, 1, 1, "stop must be at least"),
    (True, 5, 1, "finite numbers"), (0, math.inf, 1, "finite numbers"), (0, "5", 1, "finite numbers"),
    (0, MAX_VALUES, 1, "at most"), (-1e308, 1e308, 1, "at most"),
])
def test_value_range_mistakes(start, stop, step, words):
    with pytest.raises(AxisError, match=words):
        value_range(start, stop, step)


def test_axis_from_json():
    assert axis_from_json({"path": "host.memory_mb", "values": [1, 2]}) == Axis("host.memory_mb", (1, 2))
    assert axis_from_json({"path": "seed", "start": 1, "stop": 3, "step": 1}).values == (1, 2, 3)


@pytest.mark.parametrize("item, words", [
    ([1, 2], "an axis is an object"),
    ({"path": "seed", "values": [1], "other": 1}, "unknown keys other"),
    ({"path": "seed", "values": [1], "start": 1}, "not both"),
    ({"path": "seed", "values": []}, "non-empty list"),
    ({"path": "seed", "values": 3}, "non-empty list"),
    ({"path": "seed", "start": 1, "stop": 3}, "all of start, stop and step"),
    ({"path": "seed"}, "all of start, stop and step"),
    ({"values": [1]}, "non-empty string"),
    ({"path": "a..b", "values": [1]}, "cannot read"),
    ({"path": "seed", "values": list(range(MAX_VALUES + 1))}, "at most"),
])
def test_axis_from_json_mistakes(item, words):
    with pytest.raises(AxisError, match=words):
        axis_from_json(item)


def test_axis_from_text():
    assert axis_from_text("vms[web].count=1,2, 3").values == (1, 2, 3)
    assert axis_from_text("policies[kvm].params.victim=lru,\"clock\",true").values == ("lru", "clock", True)
    assert axis_from_text("host.memory_mb=1024:4096:1024").values == (1024, 2048, 3072, 4096)
    assert axis_from_text("name=a:b:c").values == ("a:b:c",)
    for bad in ("host.memory_mb", "host.memory_mb=", "=1,2", "vms[=1"):
        with pytest.raises(AxisError):
            axis_from_text(bad)


# --- points -----------------------------------------------------------------------------------------

def test_points_vary_the_first_axis_slowest():
    axes = [Axis("a", (1, 2)), Axis("b", ("x", "y", "z"))]
    assert list(points(axes)) == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
    assert point_label(axes, (2, "y")) == 'a=2, b="y"'


def test_point_document_names_the_axis_that_names_nothing():
    axes = [Axis("host.memory_mb", (1,)), Axis("vms[nope].count", (1,))]
    with pytest.raises(AxisError) as caught:
        point_document(document(), axes, (1,  1))
    assert caught.value.args[1] == 1
    assert str(caught.value).startswith("'vms[nope].count': no entry named 'nope'")


def test_point_document_leaves_the_base_alone():
    base = document()
    point = point_document(base, [Axis("vms[web].memory_mb", (1,))], (1,))
    assert point["vms"][0]["memory_mb"] == 1
    assert base == document()


PATHS = ("host.memory_mb", "vms[web].memory_mb", "vms[1].count", "vms[web].workload.phases[0].footprint_mb",
         "policies[esx].params.idle_tax_pct", "policies[static].params.x", "seed", "host.reserve_mb")
VALUES = st.one_of(st.integers(-10, 10**6), st.text(max_size=5), st.booleans(), st.none())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.lists(VALUES, min_size=1, max_size=4)),
                min_size=1, max_size=3, unique_by=lambda axis: axis[0]))
def test_every_point_holds_its_values(spec):
    axes = [Axis(path, tuple(values)) for path, values in spec]
    all_points = list(points(axes))
    assert len(all_points) == point_count(axes) == math.prod(len(values) for _, values in spec)
    for values in all_points:
        doc = point_document(document(), axes, values)
        for axis, value in zip(axes, values):
            assert get_at(doc, axis.path) == value
