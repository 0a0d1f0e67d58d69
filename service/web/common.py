"""What the pages share: calling the API in-process, and reading run ids from a query string."""
from __future__ import annotations

import json
import re
from typing import Any, Optional

from flask import current_app, request


def call_api(method: str, path: str, body: Any = None, headers: Optional[dict[str, str]] = None,
             ) -> tuple[int, Any]:
    """The API's answer (status, JSON) to a request made in this process with the request's
    token (put in place by service.web.auth). A form goes through the very code an API client's
    request does: the token check, the limits, validation naming each field, the idempotency key,
    and withdrawing what was stored when the broker cannot take the runs."""
    headers = dict(headers or {})
    authorization = request.environ.get("HTTP_AUTHORIZATION")
    if authorization:
        headers["Authorization"] = authorization
    # an app context of its own: the inner request would otherwise share this one's ``g``, and
    # close its database session and restart its timer (service.prometheus) on the way out
    with current_app.app_context():
        response = current_app.test_client().open(path, method=method, headers=headers,
                                                  data=None if body is None else json.dumps(body),
                                                  content_type=None if body is None else "application/json")
    try:
        answer = response.get_json(silent=True)
    finally:
        response.close()
    return response.status_code, answer


def decimal(text: str) -> Optional[int]:
    """A number written in ASCII digits, else None (str.isdigit also takes "²", which int() refuses)."""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text or "") else None


def run_ids(values: list[str]) -> tuple[list[int], list[str]]:
    """Run ids from ``runs=1,2,7``, ``runs=1&runs=2`` or both, in order, once each; and the
    pieces that are not ids."""
    ids: list[int] = []
    bad: list[str] = []
    for value in values:
        for piece in value.replace(" ", ",").split(","):
            if not piece:
                continue
            if 0 < (decimal(piece) or 0) < 2**31:
                if int(piece) not in ids:
                    ids.append(int(piece))
            else:
                bad.append(piece)
    return ids, bad


def fmt(value: Any, pattern: str = "{:,.2f}") -> str:
    """A number as the tables show it; ``-`` for none."""
    if value is None:
        return "-"
    try:
        return pattern.format(value)
    except (TypeError, ValueError):
        return str(value)
