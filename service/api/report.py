"""The HTML pages for a person: ``/experiments/<id>/report`` (service.report), ``/sweeps/<id>/report``
and ``/capacity-searches/<id>/report`` (service.study_reports)."""
from __future__ import annotations

from flask import Blueprint, Response, url_for

from ..capacity_searches import history, search_answer, search_results
from ..models import RunStatus
from ..report import render_report
from ..runs import compare, run_series
from ..study_reports import render_capacity, render_sweep
from ..sweeps import answer, progress, results
from .capacity_searches import compare_history, load_search
from .common import db
from .experiments import load_experiment
from .sweeps import load_sweep

blp = Blueprint("report", __name__)


@blp.get("/experiments/<int:experiment_id>/report")
def experiment_report(experiment_id: int) -> Response:
    experiment = load_experiment(experiment_id)
    session = db()
    series = {run.id: run_series(session, run.id) for run in experiment.runs
              if run.status == RunStatus.SUCCEEDED.value}
    links = {
        "experiment": url_for("experiments.ExperimentItem", experiment_id=experiment.id),
        "comparison": url_for("experiments.ExperimentComparison", experiment_id=experiment.id),
        "csv": {run.id: url_for("runs.RunSeriesView", run_id=run.id, format="csv") for run in experiment.runs},
    }
    html = render_report(experiment, compare(experiment.runs), series, links)
    return Response(html, mimetype="text/html")


@blp.get("/sweeps/<int:sweep_id>/report")
def sweep_report(sweep_id: int) -> Response:
    sweep = load_sweep(sweep_id)
    links = {"self": url_for("sweeps.SweepItem", sweep_id=sweep.id),
             "csv": url_for("sweeps.SweepResults", sweep_id=sweep.id, format="csv")}
    rows = results(sweep)
    html = render_sweep(sweep, progress(sweep), rows, answer(sweep, rows), links,
                        lambda experiment_id: url_for("report.experiment_report", experiment_id=experiment_id))
    return Response(html, mimetype="text/html")


@blp.get("/capacity-searches/<int:search_id>/report")
def capacity_report(search_id: int) -> Response:
    search = load_search(search_id)
    found = search_results(search)
    experiments = {probe.experiment.runs[0].id: probe.experiment_id for probe in search.probes
                   if probe.experiment.runs}
    links = {"self": url_for("capacity_searches.SearchItem", search_id=search.id),
             "history": url_for("capacity_searches.SearchHistory", search_id=search.id)}

    def run_link(probe: dict) -> str:
        if probe.get("run") not in experiments:
            return url_for("runs.RunItem", run_id=probe["run"]) if probe.get("run") else "#"
        return url_for("report.experiment_report", experiment_id=experiments[probe["run"]]) + f"#run-{probe['run']}"

    history_rows = compare_history(search, history(db(), search))
    html = render_capacity(search, found, search_answer(search, found), links, run_link, history_rows)
    return Response(html, mimetype="text/html")
