"""The engine benchmark's bare loops (bench/bare_loops.py) are the limit the engine is measured
against, so they must do exactly the engine's work: the same miss counts as libCacheSim (the
trace's .expected.json, made with its C loop) and as the engine's own ``mrc`` path, on a real trace
at every recorded cache size and on a synthetic trace with a large footprint."""
from __future__ import annotations

import json

import libcachesim as lcs
import numpy as np
import pytest

from bench.bare_loops import bare_misses
from service.engine.mrc import miss_counts
from service.engine.traces import load_trace

from .conftest import DATA

TRACE = "lackey_sort"       # the shortest of the lackey traces (16.6 M references)


@pytest.fixture(scope="module")
def lackey():
    ids = load_trace(DATA / f"{TRACE}.txt.gz")
    expected = json.loads((DATA / f"{TRACE}.expected.json").read_text())
    assert len(ids) == expected["n_refs"]
    return ids, expected


@pytest.mark.parametrize("policy", ["LRU", "CLOCK"])
def test_bare_loops_match_libcachesim_on_the_whole_trace(lackey, policy):
    ids, expected = lackey
    rows = [r for r in expected["results"] if r["policy"] == policy]
    assert len(rows) == 5
    got = [bare_misses(ids, policy.lower(), r["cache_size"]) for r in rows]
    want = [r["misses"] for r in rows]
    assert got == want, f"{TRACE} {policy} at {[r['cache_size'] for r in rows]} frames: bare {got}, libCacheSim {want}"


@pytest.mark.parametrize("policy", ["lru", "clock"])
def test_bare_loops_match_the_engine(lackey, policy):
    ids, _ = lackey
    prefix = np.ascontiguousarray(ids[:300_000])
    sizes = [1, 9, 46, 300]
    assert [bare_misses(prefix, policy, n) for n in sizes] == miss_counts(prefix, policy, sizes)


def _zipf_ids(n_refs: int, n_pages: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(np.arange(1, n_pages + 1, dtype=np.float64) ** -0.9)
    ranks = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n_refs), side="right"), n_pages - 1)
    ids = rng.permutation(n_pages).astype(np.int32)[ranks]
    seen = np.zeros(n_pages, dtype=bool)
    seen[ids] = True
    return (np.cumsum(seen, dtype=np.int32) - 1)[ids]    # dense ids, as the benchmark makes them


@pytest.mark.parametrize("policy", ["lru", "clock"])
def test_bare_loops_match_libcachesim_and_the_engine_on_a_large_footprint(policy):
    ids = _zipf_ids(60_000, 20_000, seed=3)
    distinct = int(ids.max()) + 1
    sizes = [1, 50, distinct // 10, distinct]
    req = lcs.Request()
    req.obj_size = 1
    peer = []
    for n in sizes:
        cache = lcs.LRU(n) if policy == "lru" else lcs.Clock(n)
        misses = 0
        for page in ids.tolist():
            req.obj_id = page
            misses += not cache.get(req)
        peer.append(misses)
    bare = [bare_misses(ids, policy, n) for n in sizes]
    assert bare == peer, f"{policy} at {sizes} frames: bare {bare}, libCacheSim {peer}"
    assert bare == miss_counts(ids, policy, sizes)
    assert bare[-1] == distinct      # everything fits: cold misses only
