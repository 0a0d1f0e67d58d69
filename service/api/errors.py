"""One JSON error shape for every error, flask-smorest's:
``{"code": 422, "status": "Unprocessable Entity", "message": "...", "errors": {"json": {"vms[1].memory_mb": [...]}}}``.

Field errors are keyed by location (``json``, ``query``, ``headers``, ``files``) and then by the
field's path as a user writes it. A failure inside the server is logged and answered with a
generic message: no traceback and no SQL reach the client.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from flask_smorest import Api
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from ..db import is_connection_failure
from ..scenario import flatten_errors
from .common import settings

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server's log has the details"


class VmemlabApi(Api):
    def handle_http_exception(self, error: HTTPException):
        payload, code, headers = super().handle_http_exception(error)
        errors = payload.get("errors")
        if isinstance(errors, dict):
            payload["errors"] = errors = {location: flatten_errors(messages) if isinstance(messages, dict)
                                          else messages for location, messages in errors.items()}
        if "message" not in payload:
            payload["message"] = _message(code, error, errors)
        return payload, code, headers


def _message(code: int, error: HTTPException, errors: Any) -> str:
    if code >= 500:
        return INTERNAL_MESSAGE
    if code == 413:
        if (request.endpoint or "").startswith("traces."):
            limit = settings().max_trace_bytes
            return f"the trace is larger than the limit of {limit} bytes (VMEMLAB_MAX_TRACE_BYTES)"
        return f"the request body is larger than the limit of {request.max_content_length} bytes (VMEMLAB_MAX_REQUEST_BYTES)"
    if isinstance(errors, dict) and errors:
        fields = [f"{path}" if location == "json" else f"{location} {path}"
                  for location, messages in errors.items()
                  for path in (messages if isinstance(messages, dict) else [location])]
        return f"invalid {', '.join(fields)}"
    return error.description or error.name


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DBAPIError)
    def database_error(exc: DBAPIError):
        log.exception("database error")
        if is_connection_failure(exc):
            return _payload(503, "Service Unavailable", "the database is unavailable; retry later")
        return _payload(500, "Internal Server Error", INTERNAL_MESSAGE)


def _payload(code: int, status: str, message: str):
    return {"code": code, "status": status, "message": message}, code
