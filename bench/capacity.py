"""Capacity search benchmark: prints figures, asserts nothing about speed.

How long does the README's question take to answer? A capacity search for the seed host with
the seed's ``web`` VM (``sql`` stays beside its copies) under all six built-in policies at SLA 1.5,
offline, the policies' searches spread over ``--jobs`` processes: the wall time, and per policy
the copies that fit, what limits them, the probes and their simulated references.

Run:  .venv/bin/python bench/capacity.py [--jobs 2] [--max-count 64]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # measure this checkout

from service.capacity import SLA, capacity_search  # noqa: E402
from service.cli.capacity import one_line  # noqa: E402
from service.policies import load_policy  # noqa: E402
from service.scenario import load_scenario_file  # noqa: E402

POLICIES = ("static", "overcommit", "esx", "dynamic-memory", "smart-paging", "kvm")


def one(policy: str, max_count: int):
    scenario, _ = load_scenario_file(ROOT / "scenarios" / "seed.json")
    started = time.perf_counter()
    found = capacity_search(scenario, "web", load_policy(policy), {}, SLA(1.5), max_count)
    return found, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--max-count", type=int, default=64)
    args = parser.parse_args()
    print(f"capacity search: seed host, copies of web beside sql, SLA 1.5, {len(POLICIES)} policies, "
          f"--jobs {args.jobs}, bound {args.max_count}, {os.cpu_count()} cores")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, POLICIES, [args.max_count] * len(POLICIES)))
    wall = time.perf_counter() - started
    for found, seconds in results:
        probes = " ".join(f"{p.count}{'+' if p.ok else '-'}" for p in found.probes)
        print(f"  {found.policy:15s} {found.count:3d} copies, limited by {found.limited_by:8s} "
              f"{len(found.probes):2d} probes in {seconds:6.1f} s: {probes}")
    scenario, _ = load_scenario_file(ROOT / "scenarios" / "seed.json")
    print(one_line([found for found, _ in results], scenario, "web", SLA(1.5)))
    print(f"wall time: {wall:.1f} s (target < 300 s: {'met' if wall < 300 else 'NOT met'})")


if __name__ == "__main__":
    main()
