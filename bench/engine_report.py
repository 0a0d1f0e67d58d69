"""Printing for the engine benchmark (bench/engine.py): the machine, the summary table with its
verdicts, the lines of a replay comparison, the per-phase profile of a run."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import numpy as np

from bench import engine_cases as cases
from service.engine import ENGINE_VERSION

ROOT = Path(__file__).resolve().parents[1]


class Report:
    """The summary table: one row per figure; verdict met / not met / MISMATCH / not measured."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.details: dict = {}

    def add(self, key: str, figure: str, measured: float | None, unit: str, target: str | None,
            ok: bool | None, status: str | None = None) -> None:
        verdict = status or ("info" if target is None else "not measured" if ok is None
                             else "met" if ok else "NOT met")
        self.rows.append(dict(key=key, figure=figure, measured=measured, unit=unit, target=target, verdict=verdict))

    def value(self, key: str) -> float | None:
        return next((r["measured"] for r in self.rows if r["key"] == key), None)


def mrefs(refs: int, seconds: float) -> str:
    return f"{refs / seconds / 1e6:7.1f} M refs/s"


def machine_report() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    info = dict(cpu=cpu, cores=os.cpu_count(), usable=usable, python=platform.python_version(),
                numba=version("numba"), numpy=np.__version__, libcachesim=version("libcachesim"),
                engine=ENGINE_VERSION, checkout=commit, loadavg=os.getloadavg()[0])
    print("== machine")
    print(f"cpu:          {cpu}, {info['cores']} logical cores ({usable} usable by this process); load {info['loadavg']:.2f}")
    print(f"python:       {info['python']}    numba: {info['numba']}    numpy: {info['numpy']}    libcachesim: {info['libcachesim']}")
    print(f"engine:       vmemlab engine {ENGINE_VERSION}, checkout {commit}\n")
    return info


def path_line(label: str, t: cases.Timed, n: int, engine_s: float | None = None, target: float | None = None) -> str:
    line = f"    {label:<38} {t.best_s:7.3f} s  {mrefs(n, t.best_s)}"
    if engine_s is not None:
        ratio = t.best_s / engine_s
        line += f"   engine/this {ratio:6.2f}x"
        if target is not None:
            line += f"   (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})"
    return line


def print_profile(label: str, counts: dict, run_s: float, phases: dict, missing: list, bare_s: float | None = None,
                  build_s: float | None = None) -> None:
    c, refs = counts, counts["refs"]
    print(f"{label}: {refs:,} refs, {c['epochs']} epochs, {c['slices']:,} slices (<= {c['vm_slices_at_most']:,} VM slices)")
    print(f"  counts:  hits ~{c['hits']:,} ({c['hits'] / refs:.2%}); guest faults {c['guest_faults']:,} (first touch "
          f"{c['first_touch']:,}, page-file reads {c['guest_pagefile_read']:,}; page-outs {c['guest_page_out']:,}); "
          f"host faults {c['host_faults']:,} (swap-ins {c['host_swap_in']:,}); host swap-outs {c['host_swap_out']:,}; "
          f"zero fills {c['zero_fill']:,}; COW breaks {c['cow_break']:,}; double paging {c['double_paging']:,}")
    head = f"  time:    sim.run() {run_s:.3f} s" + (f" (after {build_s:.3f} s building the state)" if build_s else "")
    print(head)
    for name, s in sorted(phases.items(), key=lambda kv: -kv[1]):
        if s >= 0.0005 or name == cases.KERNEL_PHASE:
            print(f"           {name:<40} {s:8.3f} s  {s / run_s:6.1%}   {s / c['epochs'] * 1e3:9.2f} ms/epoch"
                  + (f"   {s / refs * 1e9:6.1f} ns/ref" if name == cases.KERNEL_PHASE else ""))
    kernel = phases.get(cases.KERNEL_PHASE)
    if kernel is not None and bare_s is not None:
        misses = c["guest_faults"]
        print(f"           kernel - bare loop (outside the reference itself) {kernel - bare_s:.3f} s: "
              f"{(kernel - bare_s) / refs * 1e9:.1f} ns per reference, {(kernel - bare_s) / max(misses, 1) * 1e9:.0f} ns per miss")
    if missing:
        print(f"  not timed (the engine no longer has them): {', '.join(missing)}")


def summary(report: Report) -> None:
    print("== summary")
    print(f"{'figure':<58} {'measured':>14}  {'target':>9}  verdict")
    for r in report.rows:
        m = r["measured"]
        shown = "-" if m is None else f"{m:,.2f} {r['unit']}"
        print(f"{r['figure']:<58} {shown:>14}  {r['target'] or '-':>9}  {r['verdict']}")
