"""``/create``: a scenario pasted or uploaded, the policies picked from the enabled plugins with
forms drawn from their parameter schemas; posted to ``POST /api/v1/experiments`` in-process
(service.web.common.call_api), its 422 field paths shown next to the fields they name. Then
``/experiments/<id>/progress`` follows the runs (a meta refresh; no script) until they end."""
from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from .. import registry
from ..answers import runs_answer
from ..api.common import db, settings
from ..models import Experiment
from ..sweeps import overall
from . import web
from .auth import principal
from .common import call_api
from .forms import POLICIES, SCENARIO, fields_of, place_errors, read_params

REFRESH_S = 2


def enabled_policies() -> list[dict[str, Any]]:
    """The plugins experiments may use now, each with its parameter inputs."""
    entries = registry.listing(db(), settings().plugins_auto_enable)
    db().commit()           # the listing records newly installed plugins, as the API's does
    return [{"name": e.name, "summary": e.row.summary, "version": e.row.version,
             "trusts_guest": e.row.trusts_guest, "schema": e.row.parameters or {},
             "fields": fields_of(e.name, e.row.parameters or {})}
            for e in entries if e.status == "enabled" and e.row is not None]


@web.get("/create")
def create_form():
    return _page(scenario_text="", picked=[], values={}, errors={})


@web.post("/create")
def create_submit():
    policies = enabled_policies()
    upload = request.files.get("scenario_file")
    text = upload.read().decode("utf-8", errors="replace") if upload and upload.filename else \
        request.form.get(SCENARIO, "")
    picked = [p["name"] for p in policies if p["name"] in request.form.getlist("policy")]
    if not text.strip():
        return _page(text, picked, request.form, {SCENARIO: [("(document)", "paste a scenario or choose a file")]})
    try:
        document = json.loads(text)
    except ValueError as exc:
        return _page(text, picked, request.form, {SCENARIO: [("(document)", f"not valid JSON: {exc}")]})
    if picked and isinstance(document, dict):
        schemas = {p["name"]: p["schema"] for p in policies}
        document["policies"] = [{"name": name, "params": read_params(request.form, name, schemas[name])}
                                for name in picked]
    status, answer = call_api("POST", "/api/v1/experiments", document,
                              headers={"Idempotency-Key": request.form.get("idempotency_key") or uuid.uuid4().hex})
    if status in (200, 201):
        flash(f"Experiment {answer['id']} created: {len(answer['runs'])} run(s) queued.")
        return redirect(url_for("web.progress", experiment_id=answer["id"]))
    answer = answer or {}
    if status == 422:
        errors = place_errors((answer.get("errors") or {}).get("json") or {"(document)": [answer.get("message", "")]},
                              picked)
        known = {f["name"] for p in policies for f in p["fields"]} | {SCENARIO, POLICIES}
        for target in [t for t in errors if t not in known]:
            errors.setdefault(POLICIES, []).extend(errors.pop(target))
        return _page(text, picked, request.form, errors, status=422)
    return _page(text, picked, request.form, {}, status=status,
                 message=f"The API answered {status}: {answer.get('message', 'no message')}")


def _page(scenario_text: str, picked: list[str], values: Any, errors: dict[str, list[tuple[str, str]]],
          status: int = 200, message: Optional[str] = None):
    policies = enabled_policies()
    count = sum(len(v) for v in errors.values())
    return render_template("create.html", policies=policies, scenario_text=scenario_text, picked=picked,
                           values=values, errors=errors, error_count=count, message=message,
                           signed_in=principal() is not None, idempotency_key=uuid.uuid4().hex,
                           max_policies=settings().max_policies), status


@web.get("/experiments/<int:experiment_id>/progress")
def progress(experiment_id: int):
    experiment = db().scalar(select(Experiment).options(selectinload(Experiment.runs))
                             .where(Experiment.id == experiment_id))
    if experiment is None:
        abort(404, description=f"There is no experiment {experiment_id}.")
    runs = list(experiment.runs)
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run.status] = by_status.get(run.status, 0) + 1
    state = overall(by_status)
    finished = all(run.finished for run in runs)
    answer = runs_answer(experiment.scenario["host"]["memory_mb"], len(experiment.scenario["vms"]),
                         [(run.policy_name, run.status, run.summary) for run in runs]) if finished else None
    return render_template("progress.html", e=experiment, runs=runs, state=state, finished=finished,
                           answer=answer, refresh_s=REFRESH_S,
                           compare_url=url_for("web.compare", runs=",".join(str(r.id) for r in runs)))
