"""HTML pages of sweeps and capacity searches, for a person: the one-line answer first, then
charts (inline SVG, service.charts) and the tables they come from, each run linked."""
from __future__ import annotations

import math
from typing import Any, Optional

from jinja2 import Environment
from markupsafe import Markup

from .charts import bar_chart, line_chart
from .report import TEMPLATE as EXPERIMENT_TEMPLATE

STYLE = EXPERIMENT_TEMPLATE[EXPERIMENT_TEMPLATE.index("<style>"):EXPERIMENT_TEMPLATE.index("</style>") + 8]

SWEEP_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ s.name }} (sweep {{ s.id }}) - vmemlab</title>
{% if unfinished %}<meta http-equiv="refresh" content="5">{% endif %}
""" + STYLE + """</head><body>
<h1>{{ s.name }}</h1>
<p class="muted">Sweep {{ s.id }}, created {{ s.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") }}: {{ s.points|length }}
points x {{ policies|length }} policies = {{ rows|length }} runs; {{ state.runs_by_status|dictsort|map("join", " ")|join(", ") }}.
JSON: <a href="{{ links.self }}">sweep</a>, <a href="{{ links.csv }}">results as CSV</a>.
{% if unfinished %}<b>Runs are still going ({{ (state.progress * 100)|round(1) }} %); this page reloads every 5 s.</b>{% endif %}</p>
<p class="answer"><b>{{ answer }}</b></p>
<h2>Axes</h2>
<table><tr><th>path</th><th>values</th></tr>
{% for axis in s.axes %}<tr><td><code>{{ axis.path }}</code></td><td>{{ axis["values"]|join(", ") }}</td></tr>{% endfor %}</table>
{% if charts %}<h2>Worst slowdown against each axis</h2>
<p class="muted">Per policy, the worst VM slowdown of the run (over the other axes' values, the worst of them).</p>
<div class="charts">{% for chart in charts %}{{ chart }}{% endfor %}</div>{% endif %}
<h2>Results</h2>
<table><tr>{% for axis in s.axes %}<th>{{ axis.path }}</th>{% endfor %}<th>policy</th><th>status</th>
<th>slowdown</th><th>fairness</th><th>peak used MB</th><th>host swap peak MB</th><th>refused</th><th>blocked</th><th>run</th></tr>
{% for row in rows %}<tr>{% for axis in s.axes %}<td>{{ row.point[axis.path] }}</td>{% endfor %}
<td>{{ row.policy }}</td><td>{{ row.status }}</td>
{% for key, fmt in metric_formats %}<td>{{ fmt.format(row.metrics[key]) if row.metrics[key] is not none else "-" }}</td>{% endfor %}
<td><a href="{{ report_of(row.experiment_id) }}#run-{{ row.run_id }}">{{ row.run_id }}</a></td></tr>{% endfor %}</table>
</body></html>
"""

CAPACITY_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ c.name }} (capacity search {{ c.id }}) - vmemlab</title>
{% if unfinished %}<meta http-equiv="refresh" content="5">{% endif %}
""" + STYLE + """</head><body>
<h1>{{ c.name }}</h1>
<p class="muted">Capacity search {{ c.id }}, created {{ c.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") }}: copies of
<b>{{ c.vm_name }}</b> on a {{ "{:,}".format(c.scenario.host.memory_mb) }} MB host, at most {{ c.max_count }};
every VM admitted, none blocked over {{ "{:.0%}".format(c.sla.max_blocked_fraction) }} of its time, worst slowdown
&lt;= {{ c.sla.max_slowdown }}{% if c.sla.min_fairness is not none %}, fairness &gt;= {{ c.sla.min_fairness }}{% endif %}.
JSON: <a href="{{ links.self }}">search</a>, <a href="{{ links.history }}">history</a>.
{% if unfinished %}<b>Probes are still running; this page reloads every 5 s.</b>{% endif %}</p>
<p class="answer"><b>{{ answer }}</b></p>
{% if c.error %}<pre class="error">{{ c.error }}</pre>{% endif %}
<div class="charts">{% for chart in charts %}{{ chart }}{% endfor %}</div>
<h2>Per policy</h2>
<table><tr><th>policy</th><th>version</th><th>status</th><th>copies that fit</th><th>limited by</th>
<th>worst slowdown at that count</th><th>probes (copies: + fits, - does not; run)</th><th>not monotone at</th></tr>
{% for r in results %}<tr><td>{{ r.policy }}</td><td>{{ r.policy_version or "-" }}</td><td>{{ r.status }}</td>
<td>{{ r.count if r.count is not none else "-" }}</td><td>{{ r.limited_by or "-" }}</td>
<td>{{ "{:.3f}".format(r.worst_slowdown) if r.worst_slowdown is not none else "-" }}</td>
<td>{% for p in r.probes %}<a href="{{ run_link(p) }}" title="{{ p.detail }}">{{ p.count }}{{ "+" if p.ok else "-" }}</a>{{ " " if not loop.last }}{% endfor %}</td>
<td>{{ r.non_monotone|join(", ") or "-" }}</td></tr>
{% if r.error %}<tr><td colspan="8"><pre class="error">{{ r.error }}</pre></td></tr>{% endif %}{% endfor %}</table>
{% if history %}<h2>Earlier and later searches of this scenario</h2>
<p class="muted">Copies that fit there, and how many more (or fewer) fit here.</p>
<table><tr><th>search</th><th>created</th><th>SLA slowdown</th>{% for p in history_policies %}<th>{{ p }}</th>{% endfor %}</tr>
{% for h in history %}<tr><td><a href="{{ h.links.report }}">{{ h.id }}</a></td><td>{{ h.created_at[:19] }}</td>
<td>{{ h.sla.max_slowdown }}</td>{% for p in history_policies %}{% set q = h.by_policy.get(p) %}
<td>{% if q and q.count is not none %}{{ q.count }} <small class="muted">{{ q.policy_version }}</small>{% if q.count_delta %} <small>(here {{ "%+d"|format(q.count_delta) }})</small>{% endif %}{% else %}-{% endif %}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
</body></html>
"""

METRIC_FORMATS = (("slowdown", "{:.3f}"), ("fairness", "{:.3f}"), ("peak_used_mb", "{:,.0f}"),
                  ("host_swap_peak_mb", "{:,.0f}"), ("vms_refused", "{:g}"), ("vms_blocked", "{:g}"))

_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_sweep_template = _env.from_string(SWEEP_TEMPLATE)
_capacity_template = _env.from_string(CAPACITY_TEMPLATE)


def render_sweep(sweep: Any, state: dict[str, Any], rows: list[dict[str, Any]], answer: str,
                 links: dict[str, Any], report_of: Any) -> str:
    policies = list(dict.fromkeys(row["policy"] for row in rows))
    return _sweep_template.render(
        s=sweep, state=state, rows=rows, answer=answer, links=links, report_of=report_of, policies=policies,
        unfinished=state["status"] in ("queued", "running"), metric_formats=METRIC_FORMATS,
        charts=[Markup(chart) for chart in sweep_charts(sweep.axes, rows, policies)])


def sweep_charts(axes: list[dict[str, Any]], rows: list[dict[str, Any]], policies: list[str]) -> list[str]:
    """Per numeric axis, each policy's worst slowdown at each of its values."""
    charts = []
    for axis in axes:
        xs = sorted(v for v in axis["values"] if isinstance(v, (int, float)) and not isinstance(v, bool))
        if len(xs) < 2 or len(xs) != len(axis["values"]):
            continue
        lines = []
        for policy in policies:
            ys: list[Optional[float]] = []
            for x in xs:
                seen = [row["metrics"]["slowdown"] for row in rows if row["policy"] == policy
                        and row["point"][axis["path"]] == x and row["metrics"]["slowdown"] is not None]
                ys.append(max(seen) if seen else None)
            lines.append((policy, ys))
        charts.append(line_chart(f"slowdown against {axis['path']}", xs, lines, y_unit="x", x_unit="", sparse=True,
                                 width=460))
    return charts


def render_capacity(search: Any, results: list[dict[str, Any]], answer: str, links: dict[str, Any],
                    run_link: Any, history: list[dict[str, Any]]) -> str:
    history_policies = list(dict.fromkeys(p["policy"] for h in history for p in h["policies"]))
    for h in history:
        h["by_policy"] = {p["policy"]: p for p in h["policies"]}
    return _capacity_template.render(
        c=search, results=results, answer=answer, links=links, run_link=run_link, history=history,
        history_policies=history_policies, unfinished=any(r["status"] == "running" for r in results),
        charts=[Markup(chart) for chart in capacity_charts(results, search.sla["max_slowdown"])])


def capacity_charts(results: list[dict[str, Any]], max_slowdown: float) -> list[str]:
    """Copies that fit per policy (bars), and each probe's worst slowdown against its count with
    the SLA as a dashed line."""
    bars = bar_chart("copies that fit", [(r["policy"], r["count"]) for r in results], unit="")
    counts = sorted({p["count"] for r in results for p in r["probes"]})
    if not counts:
        return [bars]
    lines = []
    for r in results:
        by_count = {p["count"]: p["worst_slowdown"] for p in r["probes"]}
        lines.append((r["policy"], [_finite(by_count.get(n)) for n in counts]))
    return [bars, line_chart("worst slowdown against copies", counts, lines, y_unit="x", x_unit="copies",
                             reference=(f"SLA {max_slowdown:g}x", max_slowdown), sparse=True, width=460)]


def _finite(value: Optional[float]) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None
