"""``/api/v1/traces``: recorded page-reference traces, uploaded once and named by experiments
(``{"kind": "trace", "trace_id": 7}``).

An upload is either the file as the request body (``Content-Type: application/octet-stream`` or
``text/plain``, ``?name=``), streamed straight to the trace folder, or a ``multipart/form-data``
form with a ``file`` part (and optionally ``name``). Either way the body may not exceed
``VMEMLAB_MAX_TRACE_BYTES`` (413, nothing stored). The same content uploaded twice is stored once:
the second upload answers 200 with the first one's record.

Every upload stores the trace's analysis (LRU miss-ratio curve, working sets, reuse distances;
exact, or SHARDS-sampled above the engine's size limit), which ``GET /traces/{id}`` shows; the
list leaves it out. A trace stored before the analysis existed answers ``analysis: null`` until
the same file is uploaded again, which computes it.
"""
from __future__ import annotations

from typing import IO, Any

from flask import request, url_for
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import func, select
from sqlalchemy.orm import defer
from sqlalchemy.exc import IntegrityError

from ..catalog import TraceInUse, TraceTooLarge, TraceUploadError, delete_trace, store_trace, trace_file
from ..engine.traces import TraceError
from ..models import Trace
from ..tracetools.analysis import analyse_file, analyse_ids
from .common import Blueprint, Listing, SQLPage, db, documented_errors, get_or_404, invalid, settings
from .schemas.traces import TraceDetailSchema, TraceQuerySchema, TraceSchema, TraceUploadQuerySchema
from .storable import field_problems, refuse_unstorable

blp = Blueprint("traces", __name__, description="Uploaded page-reference traces (one page id per reference).")

MULTIPART_SLACK = 64 * 1024       # the form's own bytes around the file part
UPLOAD_BODY = {
    "description": "the trace file (text, gzip-compressed text or .npy), as the body or as a form's 'file' part",
    "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "name": {"type": "string"}}}},
    },
}


@blp.route("")
class Traces(MethodView):
    @blp.arguments(TraceQuerySchema, location="query")
    @blp.response(200, TraceSchema(many=True))
    @blp.paginate(SQLPage)
    @blp.doc(summary="List uploaded traces")
    def get(self, args: dict) -> Listing:
        # the list shows no analysis: not read (tens of KB a row)
        statement = select(Trace).options(defer(Trace.analysis)).order_by(Trace.id)
        for key in ("name", "sha256"):
            if key in args:
                statement = statement.where(getattr(Trace, key) == args[key])
        return Listing(statement)

    @blp.arguments(TraceUploadQuerySchema, location="query")
    @blp.response(201, TraceDetailSchema)
    @blp.alt_response(200, schema=TraceDetailSchema, description="the same content was already stored", success=True)
    @documented_errors(blp, 409, 413)
    @blp.doc(summary="Upload a trace", requestBody=UPLOAD_BODY)
    def post(self, args: dict):
        limit = settings().max_trace_bytes
        multipart = request.mimetype == "multipart/form-data"
        request.max_content_length = limit + (MULTIPART_SLACK if multipart else 0)
        location = "files" if multipart else "body"
        if multipart:
            data, name = _form_file(args)
        else:
            name = args.get("name")
            if not name:
                invalid("query", {"name": ["a trace sent as the request body needs ?name="]})
            data = request.stream
        newest = db().scalar(select(func.max(Trace.id))) or 0
        try:
            trace = store_trace(db(), name, data, settings(), analyse=analyse_ids)
            db().commit()
        except TraceTooLarge:
            db().rollback()
            abort(413)          # the message names the limit (service.api.errors)
        except TraceUploadError as exc:
            db().rollback()
            invalid(location, {"file" if multipart else "(body)": [str(exc)]}, message=f"not a usable trace: {exc}")
        except IntegrityError:
            db().rollback()
            abort(409, message="the same trace is being uploaded by another request; retry to get its record")
        if trace.analysis is None:
            _analyse(trace)
        status = 201 if trace.id > newest else 200
        return trace, status, {"Location": url_for(".TraceItem", trace_id=trace.id)}


def _analyse(trace: Trace) -> None:
    """Compute and store the analysis of a trace stored before analyses were (store_trace makes
    it from the ids it reads for a new file): read from its file."""
    try:
        trace.analysis = analyse_file(trace_file(trace, settings()))
    except TraceError:          # the file went away in between: the record stays without analysis
        db().rollback()
        return
    db().commit()


def _form_file(args: dict) -> tuple[IO[bytes], str]:
    # str(): a part without a name arrives under the key None
    unknown = {str(key): ["Unknown field."] for key in set(request.form) - {"name"}}
    unknown.update({str(key): ["Unknown field."] for key in set(request.files) - {"file"}})
    upload = request.files.get("file")
    if unknown or upload is None:
        invalid("files", {**unknown, **({} if upload else {"file": ["Missing data for required field."]})})
    # parsed here, under the trace's size limit, so the edge's check of stored text is asked here
    refuse_unstorable({"files": field_problems([*request.form.items(multi=True), ("file", upload.filename or "")])})
    name: Any = request.form.get("name") or args.get("name") or upload.filename
    if not name or len(name) > 200:
        invalid("files", {"name": ["give the trace a name of 1 to 200 characters"]})
    return upload.stream, name


@blp.route("/<int:trace_id>")
class TraceItem(MethodView):
    @blp.response(200, TraceDetailSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Get a trace's record and analysis")
    def get(self, trace_id: int) -> Trace:
        return get_or_404(Trace, trace_id, "trace")

    @blp.response(204)
    @documented_errors(blp, 404, 409)
    @blp.doc(summary="Delete a trace", description="Refused (409) while an experiment uses it.")
    def delete(self, trace_id: int) -> None:
        trace = get_or_404(Trace, trace_id, "trace")
        try:
            delete_trace(db(), trace, settings())
        except TraceInUse as exc:
            abort(409, message=str(exc))
        db().commit()
