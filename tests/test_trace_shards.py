"""The SHARDS-sampled LRU curve (service.engine.shards) stays within its documented error of the
exact one-pass curve on every real trace; ``trace info`` says which method it used."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.cli import main
from service.engine import shards
from service.engine.stack_distance import distance_histogram, lru_misses, trace_profile
from service.engine.traces import load_trace, renumber_dense

from .conftest import DATA, trace_files

# Mean absolute error of the miss ratio over every cache size 1..D, the bound per rate. Measured
# (docs/traces.md): default rate 0.0070 at worst (cloudphysics_pages4k), forced 0.01 0.0165
# (cloudphysics_blocks), forced 0.1 0.0019 (cloudphysics_blocks); the bounds leave some margin.
BOUNDS = {None: 0.01, 0.01: 0.02, 0.1: 0.005}


@pytest.mark.parametrize("path", trace_files(), ids=lambda p: p.name)
def test_sampled_curve_within_documented_error(path):
    ids = load_trace(path)
    refs = int(ids.size)
    exact = lru_misses(distance_histogram(ids))
    for rate, bound in BOUNDS.items():
        profile = trace_profile(ids, "sampled", rate)
        # the default rate keeps every page of a small footprint: that is the exact pass
        assert profile["method"] == ("exact" if profile["sampling_rate"] is None else "shards")
        misses = profile["misses"]
        assert len(misses) == len(exact)
        assert misses[0] == refs and np.all(np.diff(misses) <= 1e-6)     # still a miss curve
        assert misses[-1] == pytest.approx(exact[-1])                     # cold misses are exact
        error = shards.mean_absolute_error(misses, exact, refs)
        assert error <= bound, (path.name, profile["sampling_rate"], error)


def test_default_rate_has_a_floor_of_pages_and_a_ceiling_of_one():
    assert shards.effective_rate(10_000_000) == shards.DEFAULT_RATE
    assert shards.effective_rate(100_000) == pytest.approx(shards.MIN_SAMPLED_PAGES / 100_000)
    assert shards.effective_rate(900) == 1.0
    with pytest.raises(ValueError):
        shards.effective_rate(10, 0)


def test_the_sample_is_the_same_every_time_and_near_the_rate():
    keep = shards.kept_pages(200_000, 0.05)
    assert np.array_equal(keep, shards.kept_pages(200_000, 0.05))
    assert abs(keep.mean() - 0.05) < 0.005


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=400))
def test_rate_one_is_the_exact_histogram(raw):
    ids = renumber_dense(np.array(raw, dtype=np.int64))
    estimate, facts = shards.sampled_histogram(ids, 1.0)
    assert facts["sampled_references"] == len(raw)
    assert np.allclose(estimate, distance_histogram(ids))


def test_auto_samples_only_above_the_limit(monkeypatch):
    ids = load_trace(DATA / "lackey_sort.txt.gz")
    assert trace_profile(ids)["method"] == "exact"
    monkeypatch.setattr("service.engine.stack_distance.SAMPLE_ABOVE_REFS", 1000)
    assert trace_profile(ids)["method"] == "exact"          # 937 pages: the default rate keeps them all
    monkeypatch.setattr("service.engine.shards.MIN_SAMPLED_PAGES", 100)
    assert trace_profile(ids)["method"] == "shards"


def test_trace_info_says_which_method(capsys):
    path = str(DATA / "lackey_sort.txt.gz")
    assert main(["trace", "info", path, "--rate", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "sampled: SHARDS at rate 0.1" in text
    assert main(["trace", "info", path, "--sampled", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "exact" and report["sampling_rate"] is None    # 937 pages: all kept
    assert main(["trace", "info", path, "--exact", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "exact" and report["sampling_rate"] is None
    assert main(["trace", "info", path, "--exact", "--rate", "0.1"]) == 2
