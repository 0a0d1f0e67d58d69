"""Engine benchmark (issue 12): prints figures with their targets and verdicts, asserts nothing.

Every figure is a ratio or a rate measured in this run, on this machine:

1. One VM, realistic footprint: a Zipf(0.9) trace (5 M references over about 1 M distinct 4 KB
   pages, generated with a fixed seed), cache 10 % of the distinct pages, LRU and CLOCK, on three
   paths over the same ids: the engine's ``mrc`` path (``miss_counts``, as ``vmemlab mrc`` runs
   it), libCacheSim's C loop (``process_trace`` on an oracleGeneral binary) and a bare one-level
   numba loop (bench/bare_loops.py). Miss counts must be equal. Then lackey_cc1 (20 M references,
   1,546 pages: cache-resident) with LRU, libCacheSim's C loop and per-request Python calls.
2. 16 VMs under memory pressure (sharing + host swap), CLOCK and LRU guests: references/s.
3. Scaling: 1, 4, 16, 64 VMs at the same pressure: references/s, bytes of engine state per guest
   page, the time of one epoch's policy work.
4. Wall time users see: ``vmemlab simulate scenarios/seed.json`` at --jobs 1 and --jobs 2.
5. Per-phase profile of cases 1 and 2: hits, faults, slices, epochs; time per phase.

Run:  .venv/bin/python bench/engine.py [--repeat N] [--quick] [--no-wall] [--json FILE]
The last line is always ``engine-bench: met=M/N zipf_lru_vs_libcachesim_c=X.XX`` for scripts
(M of the N measured targets met; the engine's speed over libCacheSim's C loop, Zipf, LRU).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # benchmark this checkout, whatever is installed elsewhere

from bench import engine_cases as cases  # noqa: E402
from bench.engine_report import Report, machine_report, mrefs, path_line, print_profile, summary  # noqa: E402
from bench.engine_wall import seed_wall_times  # noqa: E402
from service.engine import Simulation  # noqa: E402
from service.engine.mrc import miss_counts  # noqa: E402
from service.engine.state import C_REFS  # noqa: E402
from service.engine.traces import load_trace  # noqa: E402

TRACE = ROOT / "tests" / "data" / "lackey_cc1.txt.gz"
EXPECTED = ROOT / "tests" / "data" / "lackey_cc1.expected.json"

# Targets of issue 12; printed next to the figures, never asserted.
TARGET_VS_C_LOOP = 8.0          # engine mrc path >= 8x libCacheSim's C loop (Zipf case)
TARGET_VS_BARE = 0.5            # ... and >= 0.5x the bare one-level numba loop
TARGET_CLOCK_REFS_S = 40e6      # 16 VMs under pressure, CLOCK guests
TARGET_LRU_REFS_S = 25e6        # ... LRU guests
TARGET_BYTES_PER_PAGE = 16.0    # engine state per guest page at 64 VMs
TARGET_LINEAR = 0.8             # "linear": refs/s at 64 VMs >= 0.8x that at 4 VMs (same mix)
TARGET_SEED_WALL_S = 45.0       # seed comparison, --jobs 2

ZIPF_S, ZIPF_SEED, CACHE_FRACTION = 0.9, 12, 0.10
ZIPF = dict(full=(5_000_000, 1_750_000), quick=(500_000, 175_000))   # (references, Zipf ranks)
LACKEY_QUICK_REFS = 2_000_000
PER_REQUEST_REFS = 2_000_000
SCALING = dict(full=((1, 4, 16, 64), 5.0), quick=((1, 4, 16), 1.0))  # (VM counts, simulated s)
HOST_S = dict(full=15.0, quick=2.0)                                    # case 2, simulated s


# --- 1. one VM ------------------------------------------------------------------------------------

def case_zipf(quick: bool, repeat: int, report: Report) -> dict:
    n_refs, n_ranks = ZIPF["quick" if quick else "full"]
    t0 = time.perf_counter()
    ids = cases.zipf_trace(n_refs, n_ranks, ZIPF_S, ZIPF_SEED)
    distinct = int(ids.max()) + 1
    frames = max(1, math.floor(CACHE_FRACTION * distinct))
    print(f"== 1. one VM, Zipf({ZIPF_S:g}) trace, cache {CACHE_FRACTION:.0%}: engine mrc path vs libCacheSim's C loop"
          f" vs a bare numba loop  (best of {repeat})")
    print(f"trace:        {n_refs:,} references over {distinct:,} distinct pages ({distinct * 4 / 2**20:.2f} GB of 4 KB pages;"
          f" Zipf over {n_ranks:,} ranks, seed {ZIPF_SEED}, made in {time.perf_counter() - t0:.1f} s, not timed)")
    print(f"cache:        {frames:,} pages")
    cases.warm_up(ids)
    out = {"refs": n_refs, "distinct": distinct, "frames": frames, "policies": {}}
    with tempfile.TemporaryDirectory(prefix="vmemlab-bench-") as tmp:
        path = Path(tmp) / "zipf.oracleGeneral.bin"
        cases.write_oracle_general(ids, path)     # conversion is not timed
        for policy in ("lru", "clock"):
            eng = cases.engine_mrc(ids, policy, frames, repeat)
            ref = cases.libcachesim_c_loop(path, n_refs, policy, frames, repeat)
            bare = cases.bare_loop(ids, policy, frames, repeat)
            same = eng.misses == ref.misses == bare.misses
            print(f"  {policy.upper()}: misses engine {eng.misses:,}, libCacheSim {ref.misses:,}, bare loop {bare.misses:,}"
                  f" ({eng.misses / n_refs:.2%}): {'equal' if same else 'DIFFERENT'}")
            print(path_line("engine mrc path (miss_counts)", eng, n_refs))
            print(path_line("libCacheSim process_trace (C loop)", ref, n_refs, eng.best_s, TARGET_VS_C_LOOP))
            print(path_line("bare one-level numba loop", bare, n_refs, eng.best_s, TARGET_VS_BARE))
            status = None
            if not same:
                status = "MISMATCH"
                print(f"  !!! MISMATCH: {policy.upper()} miss counts differ (engine {eng.misses:,}, libCacheSim "
                      f"{ref.misses:,}, bare {bare.misses:,}): the three paths did different work, the ratios are void")
            vs_c, vs_bare = ref.best_s / eng.best_s, bare.best_s / eng.best_s
            report.add(f"zipf_{policy}_vs_libcachesim_c", f"1. Zipf {policy.upper()}: engine / libCacheSim C loop",
                       vs_c, "x", f">= {TARGET_VS_C_LOOP:g}x", vs_c >= TARGET_VS_C_LOOP, status)
            report.add(f"zipf_{policy}_vs_bare", f"1. Zipf {policy.upper()}: engine / bare numba loop",
                       vs_bare, "x", f">= {TARGET_VS_BARE:g}x", vs_bare >= TARGET_VS_BARE, status)
            prof = cases.profile_replay(ids, policy, frames)
            out["policies"][policy] = dict(misses=[eng.misses, ref.misses, bare.misses], engine_s=eng.best_s,
                                           libcachesim_c_s=ref.best_s, bare_s=bare.best_s, profile=prof)
    print()
    return out


def case_lackey(quick: bool, repeat: int, report: Report) -> dict:
    ids = load_trace(TRACE)
    if quick:
        ids = np.ascontiguousarray(ids[:LACKEY_QUICK_REFS])
    n, distinct = len(ids), int(ids.max()) + 1
    expected = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    print(f"== 1b. one VM, cache-resident: {TRACE.name}, {n:,} references over {distinct:,} pages, LRU  (best of {repeat})")
    out = {}
    with tempfile.TemporaryDirectory(prefix="vmemlab-bench-") as tmp:
        path = Path(tmp) / "lackey.oracleGeneral.bin"
        cases.write_oracle_general(ids, path)
        for frac in (0.05, 0.01):
            frames = max(1, math.floor(frac * distinct))
            eng = cases.engine_mrc(ids, "lru", frames, repeat)
            ref = cases.libcachesim_c_loop(path, n, "lru", frames, repeat)
            bare = cases.bare_loop(ids, "lru", frames, repeat)
            prefix = ids[:PER_REQUEST_REFS]
            per_req = cases.libcachesim_per_request(prefix, "lru", frames)
            prefix_engine = miss_counts(prefix, "lru", [frames])[0]
            want = next((r["misses"] for r in expected.get("results", []) if expected.get("n_refs") == n
                         and r["policy"] == "LRU" and r["cache_size"] == frames), None)
            same = eng.misses == ref.misses == bare.misses and per_req.misses == prefix_engine \
                and want in (None, eng.misses)
            print(f"  cache {frac:.0%} = {frames} pages: misses {eng.misses:,} engine, {ref.misses:,} libCacheSim, "
                  f"{bare.misses:,} bare{f', {want:,} expected.json' if want is not None else ''}: "
                  f"{'equal' if same else 'DIFFERENT'}")
            print(path_line("engine mrc path (miss_counts)", eng, n))
            print(path_line("libCacheSim process_trace (C loop)", ref, n, eng.best_s))
            per_req_ratio = (n / eng.best_s) / (len(prefix) / per_req.best_s)
            print(f"    {'libCacheSim cache.get() per request':<38} {per_req.best_s:7.3f} s  {mrefs(len(prefix), per_req.best_s)}"
                  f"   engine/this {per_req_ratio:6.2f}x   (first {len(prefix):,} refs)")
            print(path_line("bare one-level numba loop", bare, n, eng.best_s))
            if not same:
                print(f"  !!! MISMATCH at {frames} pages: engine {eng.misses:,}, libCacheSim {ref.misses:,}, bare "
                      f"{bare.misses:,}, expected.json {want}; per-request prefix {per_req.misses:,} vs engine {prefix_engine:,}")
            status = None if same else "MISMATCH"
            tag = f"{frac * 100:.0f}pct"
            report.add(f"lackey_{tag}_vs_libcachesim_c", f"1b. lackey_cc1 LRU {frac:.0%}: engine / libCacheSim C loop",
                       ref.best_s / eng.best_s, "x", None, None, status)
            report.add(f"lackey_{tag}_vs_per_request", f"1b. lackey_cc1 LRU {frac:.0%}: engine / libCacheSim per request",
                       per_req_ratio, "x", None, None, status)
            report.add(f"lackey_{tag}_vs_bare", f"1b. lackey_cc1 LRU {frac:.0%}: engine / bare numba loop",
                       bare.best_s / eng.best_s, "x", None, None, status)
            out[tag] = dict(frames=frames, misses=eng.misses, engine_s=eng.best_s, libcachesim_c_s=ref.best_s,
                            per_request_s=per_req.best_s, per_request_refs=len(prefix), bare_s=bare.best_s)
    print()
    return out


# --- 2 and 3. VMs under pressure ------------------------------------------------------------------

_warm: list[bool] = []


def host_run(n_vms: int, duration_s: float, replacement: str, repeat: int) -> dict:
    """The best of ``repeat`` instrumented runs of the host scenario. The first call warms up on
    4 VMs for 1 s: the compiled code is the same for every size and guest policy."""
    if not _warm:
        Simulation(cases.host_scenario(1.0, "lru", 4), cases.overcommit_policy()).run()
        _warm.append(True)
    scenario = cases.host_scenario(duration_s, replacement, n_vms)
    best = None
    for _ in range(repeat):
        sim = Simulation(scenario, cases.overcommit_policy())
        marks: list[tuple[float, int]] = []
        progress = (lambda _f, sim=sim, marks=marks:
                    marks.append((time.perf_counter(), int(sim.st.vm_c[:, C_REFS].sum()))))
        t0 = time.perf_counter()
        result, elapsed, timer = cases.timed_run(sim, progress)
        if best is None or elapsed < best["run_s"]:
            best = dict(run_s=elapsed, t0=t0, marks=marks, summary=result.summary, memory=cases.state_memory(sim),
                        phases_s=timer.table(elapsed), missing=timer.missing, hook_calls=timer.calls[cases.HOOKS_PHASE])
    best.update(scenario=scenario, counts=cases.run_counts(scenario, best["summary"]))
    best["refs_s"] = best["counts"]["refs"] / best["run_s"]
    return best


def case_host(duration_s: float, repeat: int, replacement: str, target: float, report: Report) -> dict:
    r = host_run(16, duration_s, replacement, repeat)
    sc, s, refs = r["scenario"], r["summary"], r["counts"]["refs"]
    faults, host = s["faults"], s["host"]
    print(f"== 2. 16 VMs under memory pressure, sharing + host swap, {replacement.upper()} guests  (best of {repeat})")
    print(f"scenario:     host {sc.host.memory_mb // 1024} GB, 16 VMs x {cases.VM_MB} MB (OS {cases.OS_MB} MB each), "
          f"{duration_s:g} simulated s; demand = {cases.working_set_ratio(sc):.2f}x the host memory left for guests")
    print(f"policy:       {s['policy']} {s['policy_version']}")
    print(f"references:   {refs:,} in {r['run_s']:.3f} s of sim.run()  ->  {mrefs(refs, r['run_s']).strip()}"
          f"   (target >= {target / 1e6:g} M: {'met' if r['refs_s'] >= target else 'NOT met'})")
    (t1, r1), (tn, rn) = r["marks"][0], r["marks"][-1]
    if rn > r1 and tn > t1:
        print(f"by epoch:     epoch 1 (boot): {r1:,} refs in {t1 - r['t0']:.2f} s; epochs 2-{len(r['marks'])}: "
              f"{rn - r1:,} refs in {tn - t1:.2f} s ({mrefs(rn - r1, tn - t1).strip()})")
    print(f"host swap:    {faults['host_swap_out']:,} pages out, {faults['host_swap_in']:,} in; peak "
          f"{host['host_swap_peak_mb']:.0f} MB; sharing saved {host['sharing_saved_mb_peak']:.1f} MB at peak")
    if faults["host_swap_out"] <= 0 or host["sharing_saved_mb_peak"] <= 0:
        print("  !!! the scenario did not exercise host swap and sharing: this figure measures an easy case")
    print()
    report.add(f"host16_{replacement}_mrefs", f"2. 16 VMs, {replacement.upper()} guests", r["refs_s"] / 1e6, "M refs/s",
               f">= {target / 1e6:g}", r["refs_s"] >= target)
    return r


def case_scaling(quick: bool, report: Report) -> list[dict]:
    sizes, duration_s = SCALING["quick" if quick else "full"]
    print(f"== 3. scaling: host and guests scaled together at the same pressure, CLOCK guests, {duration_s:g} simulated s")
    print(f"{'VMs':>4} {'host MB':>8} {'demand':>6} {'references':>14} {'sim.run s':>9} {'M refs/s':>9} {'B/page':>7}"
          f" {'B/frame':>8} {'policy ms/epoch':>15} {'non-kernel ms/epoch':>19} {'kernel ns/ref':>13}")
    rows = []
    for n in sizes:
        r = host_run(n, duration_s, "clock", 1)
        c, ph, mem = r["counts"], r["phases_s"], r["memory"]
        row = dict(vms=n, host_mb=r["scenario"].host.memory_mb, demand=cases.working_set_ratio(r["scenario"]),
                   refs=c["refs"], run_s=r["run_s"], refs_s=r["refs_s"],
                   bytes_per_page=mem["per_page"], bytes_per_frame=mem["per_frame"], epochs=c["epochs"],
                   policy_ms_per_epoch=ph.get(cases.HOOKS_PHASE, 0.0) / c["epochs"] * 1e3,
                   non_kernel_ms_per_epoch=(r["run_s"] - ph.get(cases.KERNEL_PHASE, 0.0)) / c["epochs"] * 1e3,
                   kernel_ns_per_ref=ph.get(cases.KERNEL_PHASE, math.nan) / c["refs"] * 1e9)
        rows.append(row)
        print(f"{n:>4} {row['host_mb']:>8,} {row['demand']:>5.2f}x {c['refs']:>14,} {r['run_s']:>9.2f} "
              f"{r['refs_s'] / 1e6:>9.1f} {mem['per_page']:>7.2f} {mem['per_frame']:>8.2f} {row['policy_ms_per_epoch']:>15.2f} "
              f"{row['non_kernel_ms_per_epoch']:>19.2f} {row['kernel_ns_per_ref']:>13.1f}")
    print("  (demand: working sets / host memory for guests. 1 VM runs the mix's first workload alone on the smallest"
          " host that holds it; from 4 VMs on the whole mix repeats at the same pressure)")
    base = next((r for r in rows if r["vms"] == 4), None)
    last = rows[-1]
    if base is not None and last is not base:
        ratio = last["refs_s"] / base["refs_s"]
        per_vm = (last["non_kernel_ms_per_epoch"] / last["vms"]) / max(base["non_kernel_ms_per_epoch"] / base["vms"], 1e-9)
        print(f"linear?       refs/s at {last['vms']} VMs = {ratio:.2f}x that at 4 VMs (linear: >= {TARGET_LINEAR:g}x: "
              f"{'yes' if ratio >= TARGET_LINEAR else 'NO'}); non-kernel time per VM per epoch {per_vm:.2f}x")
        report.add("scaling_linear", f"3. refs/s at {last['vms']} VMs / at 4 VMs", ratio, "x",
                   f">= {TARGET_LINEAR:g}x", ratio >= TARGET_LINEAR)
    at64 = next((r for r in rows if r["vms"] == 64), None)
    report.add("bytes_per_page_64", "3. engine state per guest page, 64 VMs", at64 and at64["bytes_per_page"], "B",
               f"<= {TARGET_BYTES_PER_PAGE:g}", None if at64 is None else at64["bytes_per_page"] <= TARGET_BYTES_PER_PAGE)
    if at64 is not None:
        report.add("policy_ms_per_epoch_64", "3. policy hooks per epoch, 64 VMs", at64["policy_ms_per_epoch"], "ms", None, None)
    print()
    return rows


# --- 4. wall time --------------------------------------------------------------------------------

def case_wall(run: bool, report: Report) -> dict | None:
    print("== 4. wall time users see: vmemlab simulate scenarios/seed.json (six policies, 120 simulated s)")
    if not run:
        print("skipped (--quick or --no-wall)\n")
        report.add("seed_wall_jobs2", "4. seed comparison wall time, --jobs 2", None, "s", f"< {TARGET_SEED_WALL_S:g}", None)
        return None
    w = seed_wall_times()
    print(f"warm-up:      the seed for 3 simulated s, {w['warm_up_s']:.1f} s (not a figure: numba loads or compiles here)")
    for key in ("jobs1", "jobs2"):
        r = w[key]
        if r is None:
            print("  --jobs 2:   --jobs not available yet (vmemlab simulate --help does not list it)")
            continue
        per = ", ".join(f"{p} {s:.1f}" for p, s in r["per_policy_s"].items())
        print(f"  {r['command']:<58} {r['wall_s']:7.1f} s   (per policy, s: {per})")
    if w["same_output"] is not None:
        print(f"same output at --jobs 1 and 2: {'yes' if w['same_output'] else 'NO: the comparison differs with --jobs'}")
    two = w["jobs2"]
    report.add("seed_wall_jobs1", "4. seed comparison wall time, --jobs 1", w["jobs1"]["wall_s"], "s", None, None)
    report.add("seed_wall_jobs2", "4. seed comparison wall time, --jobs 2", two and two["wall_s"], "s",
               f"< {TARGET_SEED_WALL_S:g}", None if two is None else two["wall_s"] < TARGET_SEED_WALL_S,
               "NOT met (output differs)" if w["same_output"] is False else None)
    print()
    return w


# --- 5. profile ----------------------------------------------------------------------------------

def case_profile(zipf: dict, hosts: dict[str, dict]) -> dict:
    print("== 5. per-phase profile (hits: references minus fault events; time from wrapping the simulator's"
          " phases, numba code untouched)")
    out = {}
    for policy, p in zipf["policies"].items():
        prof = p["profile"]
        if prof is None:
            print(f"case 1 Zipf {policy.upper()}: the engine has no replay_scenario any more: not profiled")
            continue
        print_profile(f"case 1, Zipf {policy.upper()} {CACHE_FRACTION:.0%}", prof["counts"], prof["run_s"],
                      prof["phases_s"], prof["missing"], p["bare_s"], prof["build_s"])
        out[f"zipf_{policy}"] = {k: prof[k] for k in ("build_s", "run_s", "phases_s", "counts")} | {"bare_s": p["bare_s"]}
    for repl, r in hosts.items():
        print_profile(f"case 2, 16 VMs {repl.upper()}", r["counts"], r["run_s"], r["phases_s"], r["missing"])
        out[f"host16_{repl}"] = {k: r[k] for k in ("run_s", "phases_s", "counts")}
    print()
    return out


# --- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, help="timed runs per figure, best reported (default 3, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, no wall-time part")
    ap.add_argument("--wall", action=argparse.BooleanOptionalAction, default=None,
                    help="time `vmemlab simulate` on the seed (minutes; default on, off with --quick)")
    ap.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    ap.add_argument("--zipf-only", action="store_true", help="only figure 1, the Zipf trace (about a minute)")
    args = ap.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        ap.error("--repeat must be at least 1")
    wall = args.wall if args.wall is not None else not args.quick
    started = time.perf_counter()

    report = Report()
    report.details["machine"] = machine_report()
    zipf = case_zipf(args.quick, repeat, report)
    if args.zipf_only:
        summary(report)
        print(f"engine-bench: zipf_lru_vs_libcachesim_c={report.value('zipf_lru_vs_libcachesim_c'):.2f}")
        return
    report.details["lackey_cc1"] = case_lackey(args.quick, repeat, report)
    duration = HOST_S["quick" if args.quick else "full"]
    hosts = {"clock": case_host(duration, repeat, "clock", TARGET_CLOCK_REFS_S, report),
             "lru": case_host(duration, min(repeat, 2), "lru", TARGET_LRU_REFS_S, report)}
    report.details["scaling"] = case_scaling(args.quick, report)
    report.details["wall"] = case_wall(wall, report)
    report.details["profile"] = case_profile(zipf, hosts)
    report.details["zipf"] = {k: v for k, v in zipf.items() if k != "policies"} | {
        "policies": {p: {k: v for k, v in d.items() if k != "profile"} for p, d in zipf["policies"].items()}}
    report.details["host16"] = {repl: dict(refs=r["counts"]["refs"], run_s=r["run_s"], refs_s=r["refs_s"],
                                           memory=r["memory"]) for repl, r in hosts.items()}
    summary(report)
    measured = [r for r in report.rows if r["target"] is not None and r["verdict"] != "not measured"]
    met = sum(r["verdict"] == "met" for r in measured)
    print(f"({time.perf_counter() - started:.0f} s in all{'; --quick: small sizes, not the figures' if args.quick else ''})")
    if args.json:
        Path(args.json).write_text(json.dumps({"quick": args.quick, "repeat": repeat, "figures": report.rows,
                                               "details": report.details}, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    ratio = report.value("zipf_lru_vs_libcachesim_c")
    print(f"engine-bench: met={met}/{len(measured)} zipf_lru_vs_libcachesim_c={ratio:.2f}")


if __name__ == "__main__":
    main()
