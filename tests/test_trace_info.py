"""``vmemlab trace info``: the one-pass LRU curve (stack distances) equals the engine's per-size
replay (``vmemlab mrc``'s path) exactly, on every real trace and on synthetic ones that exercise the
kernel's renumbering of its time window."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.engine.mrc import miss_counts
from service.engine.stack_distance import (
    distance_histogram,
    lru_misses,
    working_set_sizes,
)
from service.engine.traces import load_trace, renumber_dense

from .conftest import trace_files


@pytest.mark.parametrize("path", trace_files(), ids=lambda p: p.name)
def test_one_pass_curve_equals_mrc_replay(path):
    ids = load_trace(path)
    misses = lru_misses(distance_histogram(ids))
    footprint = int(ids.max()) + 1
    assert len(misses) == footprint + 1 and misses[footprint] == footprint
    sizes = sorted({1, 2, 9, max(1, footprint // 20), footprint // 3, footprint - 1, footprint} - {0})
    assert [int(misses[n]) for n in sizes] == miss_counts(ids, "lru", sizes), path.name
    assert np.all(np.diff(misses) <= 0)           # LRU's inclusion property: never worse with more frames
    expected = path.with_name(path.name.replace(".txt.gz", ".expected.json"))
    if expected.exists():
        for row in json.loads(expected.read_text())["results"]:
            if row["policy"] == "LRU":
                assert int(misses[row["cache_size"]]) == row["misses"]


# footprints below, at and just above the kernel's HOT pages kept out of its tree, and far above
@pytest.mark.parametrize("seed,n,pages", [(1, 50_000, 300), (2, 30_000, 9_000), (3, 40_000, 5), (4, 20_000, 8),
                                         (5, 20_000, 9)])
def test_synthetic_traces_at_every_size(seed, n, pages):
    rng = np.random.default_rng(seed)
    raw = (rng.zipf(1.2, n) % pages) if seed != 2 else rng.integers(0, pages, n)
    raw[::7] = raw[::7][0]                          # runs of repeats take the kernel's shortcut
    ids = renumber_dense(raw.astype(np.int64))
    misses = lru_misses(distance_histogram(ids))
    footprint = int(ids.max()) + 1
    sizes = list(range(1, footprint + 1)) if footprint < 40 else sorted(set(
        np.linspace(1, footprint, 12).astype(int).tolist()))
    assert [int(misses[s]) for s in sizes] == miss_counts(ids, "lru", sizes)


def test_working_set_sizes_are_the_smallest_caches_reaching_the_share():
    hist = np.array([3, 50, 30, 15, 5], dtype=np.int64)      # 3 cold, 100 reuses
    assert working_set_sizes(hist, (0.5, 0.8, 0.95, 0.99)) == {"50%": 1, "80%": 2, "95%": 3, "99%": 4}


def test_cli_json_and_text(tmp_path, capsys):
    trace = tmp_path / "t.txt"
    trace.write_text("\n".join(map(str, [5, 5, 7, 9, 5, 7, 11, 5])) + "\n")
    assert main(["trace", "info", str(trace), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # dense ids 0 0 1 2 0 1 3 0: distances cold,1,cold,cold,3,3,cold,3
    assert report["references"] == 8 and report["footprint"] == 4 and report["cold_misses"] == 4
    assert report["lru_misses"] == [7, 7, 4, 4]
    assert report["lru_misses"] == miss_counts(load_trace(trace), "lru", [1, 2, 3, 4])
    assert report["working_set"] == {"90%": 3, "95%": 3, "99%": 3}
    hist = {(r["min"], r["max"]): r["references"] for r in report["reuse_histogram"]}
    assert hist == {(1, 1): 1, (2, 3): 3, (4, 4): 0, (None, None): 4}
    assert main(["trace", "info", str(trace)]) == 0
    text = capsys.readouterr().out
    assert "LRU miss-ratio curve" in text and "working set" in text


def test_cli_missing_file_is_a_clean_error(tmp_path, capsys):
    assert main(["trace", "info", str(tmp_path / "none.txt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_bench_runs_and_checks_its_counts(tmp_path):
    import subprocess
    import sys
    rng = np.random.default_rng(4)
    trace = tmp_path / "t.txt"
    trace.write_text("\n".join(map(str, rng.integers(0, 500, 20_000).tolist())) + "\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "bench" / "traces.py"), "--trace", str(trace), "--repeat", "1"],
                          capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert "same miss counts at the 10 sizes: yes" in done.stdout and "traces-bench: speedup=" in done.stdout
