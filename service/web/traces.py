"""``/traces``: the uploaded traces, and ``/traces/<id>``: one trace's LRU miss-ratio curve charted
(inline SVG, service.charts), its working sets and reuse distances, as stored at upload
(service.tracetools.analysis). A trace stored before the analysis existed says how to get it."""
from __future__ import annotations

from typing import Any, Optional

from flask import abort, render_template
from sqlalchemy import select
from sqlalchemy.orm import defer

from ..api.common import db
from ..charts import bar_chart, line_chart
from ..models import Trace
from . import web


@web.get("/traces")
def traces():
    # of the analysis (tens of KB a row) the list shows only how it was made
    method = Trace.analysis["method"].as_string()
    rows = db().execute(select(Trace, method).options(defer(Trace.analysis)).order_by(Trace.id.desc())).all()
    return render_template("traces.html", traces=rows)


@web.get("/traces/<int:trace_id>")
def trace_page(trace_id: int):
    trace = db().get(Trace, trace_id)
    if trace is None:
        abort(404, description=f"no trace with id {trace_id}")
    analysis: Optional[dict[str, Any]] = trace.analysis
    charts = []
    if analysis:
        # a sampled curve is charted from the size it resolves (docs/traces.md)
        resolution = analysis.get("resolution_pages", 1)
        curve = [p for p in analysis["curve"] if p["frames"] >= resolution] or analysis["curve"]
        charts.append(line_chart(
            f"LRU miss-ratio curve of {trace.name}", [p["mb"] for p in curve],
            [("miss ratio (first references included)", [p["miss_ratio"] for p in curve])],
            y_unit="miss ratio", x_unit="MB of cache", width=640, height=300))
        refs = max(1, analysis["references"])
        charts.append(bar_chart(
            "Reuse (stack) distance, share of references",
            [(_bucket(b), round(100 * b["references"] / refs, 2)) for b in analysis["reuse_histogram"]],
            unit="%", width=640))
    return render_template("trace.html", trace=trace, analysis=analysis, charts=charts)


def _bucket(bucket: dict[str, Any]) -> str:
    if bucket.get("cold"):
        return "first reference"
    low, high = bucket["min"], bucket["max"]
    return f"{low:,} page{'s' if low != 1 else ''}" if low == high else f"{low:,}-{high:,} pages"
