"""The one-pass LRU curve (``vmemlab trace info``) against the per-size replay it replaces
(``vmemlab mrc``'s engine path at 10 cache sizes), on the largest trace in ../shared/traces.

Prints references per second for each, their ratio (target: at least 5x) and checks that both give
the same miss counts; then the SHARDS-sampled curve's time and mean absolute error at --rate (for
traces above the exact pass's size limit). Best of --repeat runs, after one warm-up (numba
compile) on a short prefix.

    .venv/bin/python bench/traces.py [--trace FILE] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.engine import shards
from service.engine.mrc import miss_counts
from service.engine.stack_distance import distance_histogram, lru_misses, trace_profile
from service.engine.traces import load_trace

SHARED = Path(os.environ.get("VMEMLAB_SHARED_TRACES", ROOT.parent / "shared" / "traces"))
TARGET = 5.0


def largest_trace() -> Path:
    # "largest" by references; the gz size is a poor proxy (lackey traces compress well)
    import json
    best = None
    for expected in SHARED.glob("*.expected.json"):
        refs = json.loads(expected.read_text())["n_refs"]
        trace = expected.with_name(expected.name.replace(".expected.json", ".txt.gz"))
        if trace.exists() and (best is None or (refs, trace.name) > best[0]):
            best = ((refs, trace.name), trace)
    if best is None:
        sys.exit(f"no traces in {SHARED}; set VMEMLAB_SHARED_TRACES or pass --trace")
    return best[1]


def best_of(repeat: int, fn):
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=shards.DEFAULT_RATE, help="SHARDS rate to time")
    args = parser.parse_args()
    path = args.trace or largest_trace()
    ids = load_trace(path)
    footprint = int(ids.max()) + 1
    sizes = sorted({max(1, footprint * k // 10) for k in range(1, 11)})

    distance_histogram(ids[:10_000])                 # compile outside the timing
    miss_counts(ids[:10_000], "lru", [1])

    one_s, hist = best_of(args.repeat, lambda: distance_histogram(ids))
    replay_s, replayed = best_of(args.repeat, lambda: miss_counts(ids, "lru", sizes))
    curve = lru_misses(hist)
    same = [int(curve[n]) for n in sizes] == replayed

    n = len(ids)
    speedup = replay_s / one_s
    print(f"trace {path.name}: {n:,} references, {footprint:,} distinct pages")
    print(f"one-pass curve (every size):   {one_s:7.3f} s  {n / one_s / 1e6:8.1f} M refs/s")
    print(f"mrc replay, {len(sizes)} sizes:          {replay_s:7.3f} s  {n / replay_s / 1e6:8.1f} M refs/s "
          f"(trace refs per second of all {len(sizes)} replays)")
    print(f"same miss counts at the {len(sizes)} sizes: {'yes' if same else 'NO'}")
    # the curve users get (trace info, uploads): the sampled histogram, clipped to [D, n]
    sampled_s, facts = best_of(args.repeat, lambda: trace_profile(ids, "sampled", args.rate))
    error = shards.mean_absolute_error(facts["misses"], curve, n)
    print(f"SHARDS curve at rate {args.rate:g}:     {sampled_s:7.3f} s  {n / sampled_s / 1e6:8.1f} M refs/s "
          f"({facts['sampled_pages']:,} pages kept; mean absolute error {error:.4f})")
    verdict = "met" if speedup >= TARGET and same else "NOT met"
    print(f"traces-bench: speedup={speedup:.1f}x target>={TARGET:.0f}x {verdict}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
