"""``/compare?runs=1,5,9``: any runs side by side, across experiments and time, with deltas
against a baseline run and charts of the runs overlaid. The page's address is the comparison:
the run ids (and ``baseline_run``) are in its query string, so it can be shared as it is."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from flask import redirect, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy import select

from ..api.common import db
from ..charts import bar_chart, line_chart
from ..models import Run
from ..report import COLUMNS, delta_cell
from ..runs import compare as compare_runs
from ..runs import run_series
from . import web
from .common import decimal, run_ids

MAX_RUNS = 12
# (title, key in the series' host table)
OVERLAID = (("Host memory used", "used_mb"), ("Host swap", "host_swap_mb"), ("Sharing saved", "sharing_saved_mb"))


@web.get("/compare")
def compare():
    ids, bad = run_ids(request.args.getlist("runs"))
    if len(request.args.getlist("runs")) > 1 and not bad:   # checkboxes send runs=1&runs=2: one short address
        return redirect(url_for("web.compare", **{**request.args.to_dict(), "runs": ",".join(map(str, ids))}))
    problems = [f"{piece!r} is not a run id" for piece in bad]
    if len(ids) > MAX_RUNS:
        problems.append(f"at most {MAX_RUNS} runs at once: compared the first {MAX_RUNS}")
        ids = ids[:MAX_RUNS]
    found = {run.id: run for run in db().scalars(select(Run).where(Run.id.in_(ids)))} if ids else {}
    missing = [i for i in ids if i not in found]
    if missing:
        problems.append(f"no run with id {', '.join(map(str, missing))}")
    runs = [found[i] for i in ids if i in found]
    baseline_run = request.args.get("baseline_run", "")
    baseline_id = decimal(baseline_run) if decimal(baseline_run) in found else None
    if not runs:
        return render_template("compare.html", runs=[], problems=problems, table=None, charts=[], vm_names=[])
    comparison = compare_runs(runs, baseline_run_id=baseline_id)
    vm_names = list(dict.fromkeys(name for row in comparison["runs"] for name in row["vms"]))
    table = [_row(row, vm_names) for row in comparison["runs"]]
    return render_template("compare.html", runs=runs, problems=problems, comparison=comparison, table=table,
                           columns=COLUMNS, vm_names=vm_names, charts=_charts(runs),
                           share_url=url_for("web.compare", runs=",".join(str(r.id) for r in runs),
                                             **({"baseline_run": baseline_id} if baseline_id else {}),
                                             _external=True))


def label_of(run: Run) -> str:
    return f"run {run.id} {run.policy_name}"


def _row(row: dict[str, Any], vm_names: list[str]) -> dict[str, Any]:
    cells = [delta_cell(row["metrics"].get(key), row["deltas"].get(key), fmt, lower) for key, _, fmt, lower in COLUMNS]
    vm_cells = []
    for name in vm_names:
        vm = row["vms"].get(name, {})
        cell = delta_cell(vm.get("slowdown"), vm.get("slowdown_delta"), "{:.3f}", True)
        if vm.get("state") not in (None, "ran"):
            cell["value"] = vm["state"] if vm.get("slowdown") is None else f"{cell['value']} ({vm['state']})"
        vm_cells.append(cell)
    return {**row, "cells": cells, "vm_cells": vm_cells}


def _charts(runs: Sequence[Run]) -> list[Markup]:
    """A bar per run of its worst slowdown, and the host's memory of every succeeded run on one
    chart per measure. Runs of different lengths or epochs share the union of their times."""
    charts = [bar_chart("Slowdown (worst VM, x)", [(label_of(r), r.slowdown) for r in runs], unit="x", width=480)]
    series = {r.id: run_series(db(), r.id) for r in runs if r.status == "succeeded"}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return [Markup(c) for c in charts]
    times = sorted({t for s in series.values() for t in s.get("time_s", [])})
    same = all(s.get("time_s") == times for s in series.values())
    for title, key in OVERLAID:
        lines = [(label_of(r), _on(times, series[r.id], key)) for r in runs if r.id in series]
        memory = max((r.summary or {}).get("host", {}).get("memory_mb") or 0 for r in runs if r.id in series)
        charts.append(line_chart(title, times, lines, width=480, sparse=not same,
                                 reference=(f"host memory {memory:,.0f} MB", memory) if key == "used_mb" and memory
                                 else None))
    return [Markup(c) for c in charts]


def _on(times: list[float], series: dict[str, Any], key: str) -> list[Optional[float]]:
    values = dict(zip(series.get("time_s", []), series.get("host", {}).get(key, [])))
    return [values.get(t) for t in times]
