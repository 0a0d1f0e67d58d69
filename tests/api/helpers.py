"""Documents and small helpers for the API tests."""
from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any, Optional

from flask import Flask
from flask.testing import FlaskClient

from service import db
from service.auth import create_token

HOST = {"memory_mb": 512, "reserve_mb": 0, "vm_overhead_mb": 16, "swap_device": "ssd"}
TEMPLATE = {"memory_mb": 256, "os_mb": 32, "replacement": "lru"}


def experiment(host_id: Optional[int] = None, template_id: Optional[int] = None, trace_id: Optional[int] = None,
               policies=("static", "esx"), duration_s: float = 2.0, **top: Any) -> dict[str, Any]:
    """Two small VMs on a host that fits one statically; stored host, template and trace when given."""
    second_phase: dict[str, Any] = {"kind": "zipf", "footprint_mb": 200, "duration_s": duration_s}
    if trace_id is not None:
        second_phase = {"kind": "trace", "trace_id": trace_id, "trace_loops": 1000, "duration_s": duration_s}
    vms: list[dict[str, Any]] = [
        {"name": "a", "workload": {"phases": [{"kind": "uniform", "footprint_mb": 160, "duration_s": duration_s}]}},
        {"name": "b", "workload": {"phases": [second_phase]}},
    ]
    for vm in vms:
        if template_id is not None:
            vm["template_id"] = template_id
        else:
            vm.update(copy.deepcopy(TEMPLATE))
    doc: dict[str, Any] = {"name": "api-test", "duration_s": duration_s, "epoch_s": 0.5, "seed": 3, "vms": vms,
                           "policies": [{"name": p} for p in policies]}
    if host_id is not None:
        doc["host_id"] = host_id
    else:
        doc["host"] = copy.deepcopy(HOST)
    doc.update(top)
    return doc


def write_trace(path: Path, pages: int = 3000, refs: int = 20000, compress: bool = True) -> Path:
    """A small trace: every page once, in order, then references over the hottest tenth."""
    hot = max(1, pages // 10)
    ids = list(range(pages)) + [(i * 7919) % hot for i in range(max(0, refs - pages))]
    text = "".join(f"{p}\n" for p in ids).encode()
    path.write_bytes(gzip.compress(text, mtime=0) if compress else text)
    return path


class Api:
    """The test client with JSON helpers; every call returns the response."""

    def __init__(self, client):
        self.client = client

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post(self, url: str, body: Any = None, **kw):
        return self.client.post(url, json=body, **kw) if body is not None else self.client.post(url, **kw)

    def put(self, url: str, body: Any, **kw):
        return self.client.put(url, json=body, **kw)

    def patch(self, url: str, body: Any, **kw):
        return self.client.patch(url, json=body, **kw)

    def delete(self, url: str, **kw):
        return self.client.delete(url, **kw)

    def create(self, url: str, body: Any) -> dict[str, Any]:
        response = self.post(url, body)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()


def error_fields(response, location: str = "json") -> dict[str, list[str]]:
    """The field errors of an error response, after checking its shape."""
    body = response.get_json()
    assert body["code"] == response.status_code and body["status"] and body["message"], body
    return body.get("errors", {}).get(location, {})


def pretty(response) -> str:
    try:
        return json.dumps(response.get_json(), indent=1)[:3000]
    except Exception:
        return response.get_data(as_text=True)[:3000]


def token_for(database_url: str, role: str = "admin", name: str = "tests") -> str:
    """A new token of ``role`` in the database."""
    with db.session_scope(database_url) as session:
        return create_token(session, name, role)


def authorized(app: Flask, token: str) -> Flask:
    """Make the app's test clients send ``token`` with every request (a request's own
    Authorization header still wins). ``FlaskClient(app)`` is a client without one."""
    class TokenClient(FlaskClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"

    app.test_client_class = TokenClient
    return app


def with_token(app: Flask, role: str = "admin") -> Flask:
    """``authorized`` with a new token of ``role`` stored in the app's database."""
    return authorized(app, token_for(app.extensions["vmemlab"].settings.database_url, role))
