"""``/api/v1/runs``: one simulation each; the history of every run, filtered and sorted by its
summary metrics; a run's per-epoch series as JSON or CSV; cancellation."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterator

from flask import Response, current_app
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.orm import defer

from ..models import Run
from ..models.runs import FINISHED, RunStatus
from ..runs import request_cancel, run_events, run_series
from .common import Blueprint, Listing, SQLPage, db, documented_errors, get_or_404, read_db
from .finished import bodies, cached, finished_run_version, json_body, json_response, set_version_etag
from .reads import retrying_reads
from .response_cache import RUNS, keep_answer
from .schemas.runs import RunDetailSchema, RunQuerySchema, RunSchema, SeriesQuerySchema, SeriesSchema

blp = Blueprint("runs", __name__, description="Runs: status, progress, results and history.")

FILTERS = {"policy": Run.policy_name, "plugin_version": Run.policy_version, "engine_version": Run.engine_version,
           "host_id": Run.host_id, "experiment_id": Run.experiment_id, "fingerprint": Run.fingerprint,
           "seed": Run.seed, "status": Run.status}
RUN, RUN_DETAIL, SERIES = RunSchema(), RunDetailSchema(), SeriesSchema()


@blp.route("")
class Runs(MethodView):
    @blp.arguments(RunQuerySchema, location="query")
    @blp.response(200, RunSchema(many=True))
    @blp.paginate()
    @blp.doc(summary="Search the history of runs",
             description="Filter by policy, plugin version, host, fingerprint, status, experiment and creation "
                         "time; sort by a summary metric (`sort=-slowdown`).")
    @retrying_reads
    def get(self, args: dict, pagination_parameters: Any) -> Response:
        # the page's ids and versions first; only the runs not cached (unfinished, or new to this
        # process) are loaded, without their summaries, which the listing does not show
        statement = select(*RUN_ITEM_STATE)
        for key, column in FILTERS.items():
            if key in args:
                statement = statement.where(column == args[key])
        if "created_after" in args:
            statement = statement.where(Run.created_at >= args["created_after"])
        if "created_before" in args:
            statement = statement.where(Run.created_at < args["created_before"])
        key = args["sort"].lstrip("-")
        descending = args["sort"].startswith("-")
        column = getattr(Run, key)
        # runs without the metric last; NULLS LAST (rather than an "IS NULL" sort key) leaves
        # the column's index usable where the database orders NULLs that way anyway
        order = column.desc() if descending else column.asc()
        statement = statement.order_by(order.nulls_last(), Run.id.desc() if descending else Run.id.asc())
        page = SQLPage(Listing(statement), pagination_parameters, read_db())
        keep_answer(RUNS)
        return json_response(run_list_body(page.rows))


RUN_ITEM_STATE = (Run.id, Run.created_at, Run.status, Run.finished_at, Run.attempts)


def run_list_body(rows: list[Any]) -> bytes:
    """The JSON of a page of runs, as flask-smorest would dump it, from each finished run's JSON
    made once per process (service.api.finished): a page of 100 finished runs costs two narrow
    queries and a join of bytes."""
    cache = bodies()
    parts: dict[int, bytes] = {}
    for row in rows:
        part = cache.get(("run-item", *row)) if row.status in FINISHED else None
        if part is not None:
            parts[row.id] = part
    missing = [row.id for row in rows if row.id not in parts]
    if missing:
        for run in read_db().scalars(select(Run).options(defer(Run.summary)).where(Run.id.in_(missing))):
            parts[run.id] = part = json_body(RUN.dump(run)).rstrip(b"\n")
            if run.status in FINISHED:
                cache.put(("run-item", *(getattr(run, c.key) for c in RUN_ITEM_STATE)), part)
    provider = current_app.json
    if provider.compact is False or (provider.compact is None and current_app.debug):   # indented
        return json_body([json.loads(parts[row.id]) for row in rows if row.id in parts])
    return b"[" + b",".join(parts[row.id] for row in rows if row.id in parts) + b"]\n"


@blp.route("/<int:run_id>")
class RunItem(MethodView):
    @blp.etag
    @blp.response(200, RunDetailSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Get a run: status, progress, timings, versions, seed, fingerprint, summary, error",
             description="A finished run never changes: send its ETag back (If-None-Match) for a 304.")
    @retrying_reads
    def get(self, run_id: int):
        version = finished_run_version(run_id)
        if version is None:
            return get_or_404(Run, run_id, "run", read_db())
        set_version_etag(blp, "run", version)
        keep_answer(("run", run_id))
        return cached(("run", version), lambda: RUN_DETAIL.dump(get_or_404(Run, run_id, "run", read_db())))


@blp.route("/<int:run_id>/cancel")
class RunCancel(MethodView):
    @blp.response(202, RunDetailSchema)
    @documented_errors(blp, 404, 409)
    @blp.doc(summary="Cancel a run", description="A queued run is cancelled at once; a running one stops at "
             "its worker's next heartbeat (status stays running until then, cancel_requested is true).")
    def post(self, run_id: int) -> Run:
        run = get_or_404(Run, run_id, "run")
        if run.finished:
            abort(409, message=f"run {run_id} has already finished ({run.status}); nothing to cancel")
        run = request_cancel(db(), run_id)
        db().commit()
        return run


CSV_BODY = {"schema": {"type": "string", "description": "CSV with a header row"}}


@blp.route("/<int:run_id>/series")
class RunSeriesView(MethodView):
    @blp.etag
    @blp.arguments(SeriesQuerySchema, location="query")
    @blp.response(200, SeriesSchema)
    @documented_errors(blp, 404, 409)
    @blp.doc(summary="A succeeded run's per-epoch series as JSON",
             description="The same as CSV: `GET /runs/{run_id}/series.csv` (`format=csv` here still answers CSV, "
                         "for clients written before that path).",
             responses={"200": {"description": "OK", "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/Series"}}, "text/csv": CSV_BODY}}})
    @retrying_reads
    def get(self, args: dict, run_id: int):
        version = finished_run_version(run_id)
        if version is None or version[2] != RunStatus.SUCCEEDED.value:
            # 404 or 409; or the series of a run that succeeded after its version was read
            series = succeeded_series(run_id)
            blp.set_etag(["series", args["format"], run_id, series])
            return series_csv(run_id, series) if args["format"] == "csv" else json_response(series_body(run_id, series))
        set_version_etag(blp, "series", version, args["format"])
        if args["format"] == "csv":
            return series_csv(run_id, succeeded_series(run_id))
        keep_answer(("run", run_id))
        return cached(("series", version), lambda: SERIES.dump(series_document(run_id, succeeded_series(run_id))))


def series_document(run_id: int, series: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run_id, "epochs": len(series.get("time_s", [])), "series": series,
            "events": finite(run_events(read_db(), run_id) or [])}


def series_body(run_id: int, series: dict[str, Any]) -> bytes:
    return json_body(SERIES.dump(series_document(run_id, series)))


@blp.route("/<int:run_id>/series.csv")
class RunSeriesCsv(MethodView):
    @documented_errors(blp, 404, 409)
    @blp.doc(summary="A succeeded run's per-epoch series as a CSV download",
             description="One row per epoch and VM: epoch, time_s, host_state, vm, the VM's fields, the figures the "
                         "policy reported for it (policy_ prefix), then the host's fields (host_ prefix).",
             responses={"200": {"description": "OK", "content": {"text/csv": CSV_BODY}}})
    @retrying_reads
    def get(self, run_id: int) -> Response:
        return series_csv(run_id, succeeded_series(run_id))


def succeeded_series(run_id: int) -> dict[str, Any]:
    run = get_or_404(Run, run_id, "run", read_db())
    series = run_series(read_db(), run_id)
    if series is None:
        abort(409, message=f"run {run_id} is {run.status}: its series exists once it has succeeded")
    return finite(series)


def series_csv(run_id: int, series: dict[str, Any]) -> Response:
    return Response(csv_rows(series), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="run-{run_id}-series.csv"'})


def csv_rows(series: dict[str, Any]) -> Iterator[str]:
    """One row per epoch and VM: epoch, time, the host's state, the VM, its fields, the figures the
    policy reported for it (``policy_`` prefix), then the host's fields (``host_`` prefix)."""
    vms: dict[str, dict[str, list]] = series.get("vms", {})
    host: dict[str, list] = series.get("host", {})
    policy: dict[str, dict[str, list]] = series.get("policy", {})
    vm_fields = list(next(iter(vms.values()), {}))
    policy_fields = sorted({key for table in policy.values() for key in table})
    host_fields = list(host)
    states = series.get("host_state", [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(["epoch", "time_s", "host_state", "vm", *vm_fields, *(f"policy_{k}" for k in policy_fields),
                     *(f"host_{k}" for k in host_fields)])
    for epoch, time_s in enumerate(series.get("time_s", [])):
        host_values = [_cell(host[k], epoch) for k in host_fields]
        for name, table in vms.items():
            reported = policy.get(name, {})
            writer.writerow([epoch, time_s, _cell(states, epoch), name, *(_cell(table[k], epoch) for k in vm_fields),
                             *(_cell(reported.get(k, []), epoch) for k in policy_fields), *host_values])
        yield flush()


def _cell(column: list, epoch: int) -> Any:
    value = column[epoch] if epoch < len(column) else None
    return "" if value is None else value


def finite(value: Any) -> Any:
    """JSON without NaN or infinities: those become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
