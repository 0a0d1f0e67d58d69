"""The HTML report of an experiment, for a person: what was simulated, every policy side by side
with deltas against the baseline, and per run charts of host and VM memory over time. One page,
no script, no external stylesheet: charts are inline SVG (service.charts)."""
from __future__ import annotations

from typing import Any, Optional

from jinja2 import Environment
from markupsafe import Markup

from .answers import runs_answer
from .charts import line_chart
from .models import Experiment, Run

VM_LINES = (("allocated", "allocated_mb"), ("ballooned", "ballooned_mb"), ("shared", "shared_mb"),
            ("host swap", "host_swapped_mb"), ("guest paged", "guest_paged_mb"))
HOST_LINES = (("used", "used_mb"), ("free", "free_mb"), ("host swap", "host_swap_mb"),
              ("sharing saved", "sharing_saved_mb"), ("of it zero pages", "zero_saved_mb"))
# (metric, heading, format, lower is better; None: neither, e.g. a host using more memory may be fitting more)
COLUMNS = (("slowdown", "slowdown", "{:.3f}", True), ("fairness", "fairness", "{:.3f}", False),
           ("peak_used_mb", "peak used MB", "{:,.0f}", None),
           ("host_swap_peak_mb", "host swap peak MB", "{:,.0f}", True),
           ("sharing_saved_mb_mean", "sharing saved MB", "{:,.0f}", False),
           ("overcommit_ratio", "overcommit", "{:.2f}", None), ("vms_refused", "refused", "{:g}", True),
           ("vms_blocked", "blocked", "{:g}", True))

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ e.name }} (experiment {{ e.id }}) - vmemlab</title>
{% if unfinished %}<meta http-equiv="refresh" content="5">{% endif %}
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;max-width:1240px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{margin-top:2rem;border-bottom:1px solid #ccc} .muted{color:#666}
table{border-collapse:collapse;margin:.5rem 0} th,td{padding:.25rem .6rem;border-bottom:1px solid #e4e4e4;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f5f5f5} .base{background:#fffbe6}
.better{color:#17803d} .worse{color:#b3261e} .charts{display:flex;flex-wrap:wrap;gap:.75rem}
.chart{border:1px solid #eee;background:#fff} pre.error{background:#fff0f0;padding:.6rem;white-space:pre-wrap}
.bar{display:inline-block;width:12rem;height:.7rem;background:#eee;vertical-align:middle}
.bar span{display:block;height:100%;background:#1f77b4} code{background:#f4f4f4;padding:0 .2rem}
.answer{font-size:1.1rem;background:#f3f8ff;border-left:4px solid #1f77b4;padding:.5rem .8rem}
.refused{background:#fff7e6;border-left:4px solid #d08700;padding:.4rem .8rem}
@media print{.charts{display:block} .chart{page-break-inside:avoid} a{color:inherit;text-decoration:none}}
</style></head><body>
<h1>{{ e.name }}</h1>
<p class="answer"><b>{{ answer }}</b></p>
<p class="muted">Experiment {{ e.id }}, created {{ e.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") }};
{{ "%g"|format(e.duration_s) }} s simulated, seed {{ e.seed }}, {{ runs|length }} polic{{ "y" if runs|length == 1 else "ies" }}.
JSON: <a href="{{ links.experiment }}">experiment</a>, <a href="{{ links.comparison }}">comparison</a>.
{% if unfinished %}<b>Runs are still going; this page reloads every 5 s.</b>{% endif %}</p>
{% if e.description %}<p>{{ e.description }}</p>{% endif %}

<h2>Policies compared</h2>
<p>{% if comparison.baseline %}Deltas are against run {{ comparison.baseline.run_id }}
(<b>{{ comparison.baseline.policy }}</b>); <span class="better">green</span> is better, <span class="worse">red</span> worse.
{% else %}No succeeded baseline run (static), so no deltas.{% endif %}
Slowdown is simulated time per unit of work against the same VM unconstrained (1 = no slowdown).</p>
<table><tr><th>policy</th><th>version</th><th>status</th>{% for c in columns %}<th>{{ c[1] }}</th>{% endfor %}
{% for vm in vm_names %}<th>{{ vm }} slowdown</th>{% endfor %}<th>wall s</th></tr>
{% for row in table %}<tr{% if row.is_baseline %} class="base"{% endif %}>
<td><a href="#run-{{ row.run_id }}">{{ row.policy }}</a></td><td>{{ row.policy_version }}</td><td>{{ row.status }}</td>
{% for cell in row.cells %}<td>{{ cell.value }}{% if cell.delta %} <small class="{{ cell.tone }}">({{ cell.delta }})</small>{% endif %}</td>{% endfor %}
{% for cell in row.vm_cells %}<td>{{ cell.value }}{% if cell.delta %} <small class="{{ cell.tone }}">({{ cell.delta }})</small>{% endif %}</td>{% endfor %}
<td>{{ row.wall }}</td></tr>{% endfor %}</table>

<h2>Setup</h2>
<table><tr><th>host</th><th>memory MB</th><th>reserve MB</th><th>overhead per VM MB</th><th>swap device</th></tr>
<tr><td>{{ "stored host %d"|format(e.host_id) if e.host_id else "inline" }}</td><td>{{ host.memory_mb }}</td>
<td>{{ host.reserve_mb }}</td><td>{{ host.vm_overhead_mb }}</td><td>{{ host.swap_device }}</td></tr></table>
<table><tr><th>VM</th><th>memory MB</th><th>startup / min / max MB</th><th>OS MB</th><th>workload</th><th>events</th></tr>
{% for vm in vms %}<tr><td>{{ vm.name }}</td><td>{{ vm.memory_mb }}</td>
<td>{{ vm.startup_mb or "-" }} / {{ vm.minimum_mb or "-" }} / {{ vm.maximum_mb or "-" }}</td><td>{{ vm.os_mb }}</td>
<td>{{ vm.workload_text }}</td><td>{{ vm.events_text or "-" }}</td></tr>{% endfor %}</table>

{% for r in run_sections %}
<h2 id="run-{{ r.run.id }}">{{ r.run.policy_name }} <small class="muted">{{ r.run.policy_version }}, run {{ r.run.id }}: {{ r.run.status }}</small></h2>
{% if r.run.status == "succeeded" %}
<p class="muted">Worker {{ r.run.worker }}, engine {{ r.run.engine_version }}, parameters <code>{{ r.params }}</code>.
<a href="{{ r.csv }}">Series as CSV</a>.</p>
{% if r.vms %}<table><tr><th>VM</th><th>state</th><th>guarantee MB</th><th>allocated MB at the end</th>
<th>allocated MB, mean of the last minute</th><th>waited for memory s</th></tr>
{% for vm in r.vms %}<tr><td>{{ vm.name }}</td><td>{{ vm.state }}</td><td>{{ "{:,.0f}".format(vm.guaranteed_mb or 0) }}</td>
<td>{{ "{:,.1f}".format(vm.allocated_end_mb or 0) }}</td><td>{{ "{:,.1f}".format(vm.allocated_last_minute_mb or 0) }}</td>
<td>{{ "{:.1f}".format(vm.memory_wait_s or 0) }}</td></tr>{% endfor %}</table>{% endif %}
{% if r.states %}<p>Time in each host state: {% for state, pct in r.states.items() %}{{ state }} {{ "%.1f"|format(pct) }}%{{ ", " if not loop.last }}{% endfor %}.</p>{% endif %}
{% if r.sharing %}<p>Sharing saved {{ "{:,.1f}".format(r.sharing.total) }} MB on average: {{ "{:,.1f}".format(r.sharing.zero) }} MB of zero pages, {{ "{:,.1f}".format(r.sharing.other) }} MB of other pages.</p>{% endif %}
{% for vm in r.refused %}<p class="refused" role="note"><b>VM {{ vm.name }} was refused</b> and never ran: {{ vm.reason }}.</p>{% endfor %}
{% if r.notes %}<p>Notes:</p><ul>{% for note in r.notes %}<li>{{ note }}</li>{% endfor %}</ul>{% endif %}
<div class="charts">{% for chart in r.charts %}{{ chart }}{% endfor %}</div>
{% elif r.run.status == "failed" %}<pre class="error">{{ r.run.error }}</pre>
{% elif r.run.status == "cancelled" %}<p>Cancelled.</p>
{% else %}<p>{{ r.run.status }}: <span class="bar"><span style="width:{{ (r.run.progress * 100)|round(1) }}%"></span></span>
{{ (r.run.progress * 100)|round(1) }} %</p>{% endif %}
{% endfor %}
</body></html>
"""

_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_template = _env.from_string(TEMPLATE)


def render_report(experiment: Experiment, comparison: dict[str, Any], series: dict[int, Optional[dict]],
                  links: dict[str, Any]) -> str:
    """The page. ``series`` maps each succeeded run's id to its series; ``links`` holds the URLs
    of the experiment (``experiment``, ``comparison``) and per run id of its CSV (``csv``)."""
    runs: list[Run] = list(experiment.runs)
    scenario = experiment.scenario
    rows = {row["run_id"]: row for row in comparison["runs"]}
    vm_names = [vm["name"] for vm in scenario["vms"]]
    return _template.render(
        e=experiment, runs=runs, links=links, comparison=comparison, columns=COLUMNS, vm_names=vm_names,
        answer=runs_answer(scenario["host"]["memory_mb"], len(scenario["vms"]),
                           [(run.policy_name, run.status, run.summary) for run in runs]),
        unfinished=any(not run.finished for run in runs), host=scenario["host"],
        vms=[_vm_view(vm) for vm in scenario["vms"]],
        table=[_table_row(run, rows[run.id], vm_names) for run in runs],
        run_sections=[_section(run, links["csv"][run.id], series.get(run.id), scenario["host"]["memory_mb"])
                      for run in runs])


def _section(run: Run, csv: str, series: Optional[dict[str, Any]], host_memory_mb: float) -> dict[str, Any]:
    refused = refusals(run.summary)
    charts = _charts(series, host_memory_mb, frozenset(vm["name"] for vm in refused))
    return {"run": run, "params": _params(run.params), "csv": csv, "charts": charts, "refused": refused,
            **_behaviour(run.summary)}


def _behaviour(summary: Optional[dict[str, Any]]) -> dict[str, Any]:
    """What each VM was left with, how long the host spent in each state, what sharing saved,
    and the run's notes (older summaries lack some of it: shown as far as they go)."""
    summary = summary or {}
    host = summary.get("host", {})
    sharing = None
    if host.get("sharing_saved_mb_mean"):
        zero = host.get("sharing_saved_zero_mb_mean", 0.0)
        sharing = {"total": host["sharing_saved_mb_mean"], "zero": zero, "other": host["sharing_saved_mb_mean"] - zero}
    vms = [vm for vm in summary.get("vms", []) if "allocated_end_mb" in vm]
    return {"vms": vms, "states": host.get("states_pct") or {}, "sharing": sharing, "notes": summary.get("notes", [])}


def _table_row(run: Run, row: dict[str, Any], vm_names: list[str]) -> dict[str, Any]:
    cells = [delta_cell(row["metrics"].get(key), row["deltas"].get(key), fmt, lower)
             for key, _, fmt, lower in COLUMNS]
    vm_cells = []
    for name in vm_names:
        vm = row["vms"].get(name, {})
        value = vm.get("slowdown")
        cell = delta_cell(value, vm.get("slowdown_delta"), "{:.3f}", True)
        if vm.get("state") not in (None, "ran"):
            cell["value"] = vm["state"] if value is None else f"{cell['value']} ({vm['state']})"
        vm_cells.append(cell)
    return {"run_id": run.id, "policy": run.policy_name, "policy_version": run.policy_version,
            "status": run.status if run.finished else f"{run.status} {run.progress:.0%}",
            "is_baseline": row["is_baseline"], "cells": cells, "vm_cells": vm_cells,
            "wall": f"{run.wall_s:.1f}" if run.wall_s is not None else "-"}


def delta_cell(value: Any, delta: Optional[float], fmt: str, lower_is_better: Optional[bool]) -> dict[str, str]:
    if value is None:
        return {"value": "-", "delta": "", "tone": ""}
    text = fmt.format(value)
    shown = None if delta is None else fmt.format(abs(delta))
    if shown is None or shown == fmt.format(0):        # no difference at the precision shown
        return {"value": text, "delta": "", "tone": ""}
    tone = "" if lower_is_better is None else "better" if (delta < 0) == lower_is_better else "worse"
    return {"value": text, "delta": ("+" if delta > 0 else "-") + shown, "tone": tone}


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def _vm_view(vm: dict[str, Any]) -> dict[str, Any]:
    phases = vm.get("workload", {}).get("phases", [])
    text = []
    for phase in phases:
        what = phase["kind"]
        if phase.get("footprint_mb"):
            what += f" {phase['footprint_mb']:g} MB"
        if phase.get("duration_s"):
            what += f" for {phase['duration_s']:g} s"
        text.append(what)
    events = ", ".join(f"{e['action']} at {e['at_s']:g} s" for e in vm.get("events", []))
    return {**vm, "workload_text": "; then ".join(text) or "idle", "events_text": events}


def refusals(summary: Optional[dict[str, Any]]) -> list[dict[str, str]]:
    """The VMs a run refused, each with why (the engine's ``refused_reason``, as the CLI's notes
    say it): a refused VM never ran, so it gets this sentence instead of an empty chart."""
    return [{"name": vm["name"], "reason": vm.get("refused_reason") or "the policy did not admit it"}
            for vm in (summary or {}).get("vms", []) if vm.get("state") == "refused"]


def _charts(series: Optional[dict[str, Any]], host_memory_mb: Optional[float] = None,
            refused: frozenset[str] = frozenset()) -> list[Markup]:
    if not series:
        return []
    xs = series.get("time_s", [])
    host = series.get("host", {})
    reference = None if not host_memory_mb else (f"host memory {host_memory_mb:,.0f} MB", float(host_memory_mb))
    charts = [line_chart("Host memory", xs, [(label, host.get(key, [])) for label, key in HOST_LINES],
                         reference=reference)]
    for name, table in series.get("vms", {}).items():
        if name not in refused:
            charts.append(line_chart(f"VM {name} memory", xs, [(label, table.get(key, [])) for label, key in VM_LINES]))
    return [Markup(chart) for chart in charts]
