"""``/experiments/<id>/report``: the experiment as an HTML page for a person (service.report)."""
from __future__ import annotations

from flask import Blueprint, Response, url_for

from ..models import RunStatus
from ..report import render_report
from ..runs import compare, run_series
from .common import db
from .experiments import load_experiment

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
