"""Schemathesis against the API: the schema, a seeded application, the checks and a record of the
statuses seen. Used by tests/api/test_fuzz.py (a bounded run) and bench/fuzz.py (a larger one).

The application runs on the embedded default (a migrated SQLite file and the SQLite broker in a
temporary data folder). It is seeded with a host, a VM template, a trace and an experiment whose
runs have finished (executed in this process), and generated ids are folded onto the small range
the seeded rows occupy, so that item endpoints are reached with ids that exist as well as ones that
do not. Every generated request carries the seeded admin token; the scripted part (``scripted``)
asks once without a token (401) and once with a write token where admin is needed (403).
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from unittest import mock

import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from service import db
from service.app import create_app
from service.auth import ADMIN, WRITE
from service.settings import Settings, use_settings

from .helpers import HOST, TEMPLATE, authorized, token_for

OPENAPI_PATH = "/api/v1/openapi.json"
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
ID_RANGE = 6       # seeded ids are 1..3 or so; 0 and 4..5 do not exist



# examples per operation (bench/fuzz.py runs many more)
EXAMPLES = int(os.environ.get("VMEMLAB_FUZZ_EXAMPLES", "25"))
# hypothesis settings of every generated-request test; the database of failing examples stays off:
# a replayed example would not find the seeded rows it was made against. Derandomized everywhere,
# as hypothesis' own "ci" profile does when it sees a CI variable: what passes here passes in CI
# (a status random input only sometimes reaches is asked for by ``scripted``)
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.filter_too_much])


@functools.cache
def spec_schema() -> Any:
    """The OpenAPI document, read from an application that serves nothing else (no database is touched)."""
    folder = Path(tempfile.mkdtemp(prefix="vmemlab-spec-"))
    try:
        app = create_app(Settings(data_dir=folder, database_url=f"sqlite:///{folder / 'unused.db'}"))
        document = app.test_client().get(OPENAPI_PATH).get_json()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    schema = schemathesis.openapi.from_dict(document)

    @schema.hook
    def map_path_parameters(_context, path_parameters: Any) -> Any:
        if not path_parameters:
            return path_parameters
        mapped = dict(path_parameters)
        for key, value in path_parameters.items():
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                mapped[key] = value % ID_RANGE
            elif key == "name" and isinstance(value, str) and len(value) % 3 == 0:
                mapped[key] = "static"       # an installed plugin, a third of the time
        return mapped

    return schema


@dataclasses.dataclass(frozen=True)
class Seeded:
    settings: Settings
    token: str          # an admin token stored in the seeded database


def seed(folder: Path, database_url: Optional[str] = None) -> Seeded:
    """A migrated database (SQLite in ``folder``, or the empty one at ``database_url``) with one of
    everything and an experiment with finished runs, and an admin token."""
    from service.tasks import execute_run

    settings = Settings(data_dir=folder / "data", database_url=database_url or f"sqlite:///{folder / 'vmemlab.db'}",
                        heartbeat_s=0.05, stale_heartbeats=40)
    settings.ensure_dirs()
    db.upgrade(settings.database_url)
    use_settings(settings)
    token = token_for(settings.database_url, ADMIN, "fuzz admin")
    client = authorized(create_app(settings), token).test_client()

    def created(response) -> dict[str, Any]:
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    host = created(client.post("/api/v1/hosts", json={"name": "h1", "spec": HOST}))
    template = created(client.post("/api/v1/vm-templates", json={"name": "t1", "spec": TEMPLATE}))
    pages = list(range(300)) + [(i * 7919) % 30 for i in range(2000)]
    trace = created(client.post("/api/v1/traces?name=t.gz", data=gzip.compress("".join(f"{p}\n" for p in pages)
                                                                                .encode(), mtime=0),
                                content_type="application/octet-stream"))
    vms = [{"name": "a", "template_id": template["id"],
            "workload": {"phases": [{"kind": "uniform", "footprint_mb": 160, "duration_s": 2.0}]}},
           {"name": "b", "template_id": template["id"],
            "workload": {"phases": [{"kind": "trace", "trace_id": trace["id"], "trace_loops": 1000,
                                     "duration_s": 2.0}]}}]
    document = {"name": "fuzz", "duration_s": 2.0, "epoch_s": 0.5, "seed": 3, "host_id": host["id"], "vms": vms,
                "policies": [{"name": "static"}, {"name": "esx"}]}
    experiment = created(client.post("/api/v1/experiments", json=document))
    for run in experiment["runs"]:
        assert execute_run(run["id"], worker="fuzz", settings=settings) == "succeeded"
    # and one experiment whose runs stay queued (cancel answers 202 for those)
    created(client.post("/api/v1/experiments", json={**document, "name": "queued"}))
    # a finished sweep and a finished capacity search (their runs driven as a worker does)
    from service.capacity_searches import advance_and_enqueue

    celery = client.application.extensions["vmemlab"].celery
    sweep = client.post("/api/v1/sweeps", json={"scenario": document, "axes": [{"path": "seed", "values": [3, 4]}],
                                                "policies": [{"name": "static"}]})
    assert sweep.status_code == 202, sweep.get_data(as_text=True)
    for row in sweep.get_json()["results"]:
        assert execute_run(row["run_id"], worker="fuzz", settings=settings) == "succeeded"
    search = client.post("/api/v1/capacity-searches", json={"scenario": document, "vm": "a", "max_count": 2,
                                                            "sla": {"max_slowdown": 3}, "policies": [{"name": "static"}]})
    assert search.status_code == 202, search.get_data(as_text=True)
    while client.get("/api/v1/capacity-searches/1").get_json()["status"] == "running":
        for run in client.get("/api/v1/runs?status=queued&page_size=100").get_json():
            if run["experiment_id"] > 2:          # not the queued experiment's runs
                execute_run(run["id"], worker="fuzz", settings=settings)
                advance_and_enqueue(celery, run_id=run["id"])
    db.dispose_engines()
    return Seeded(settings, token)


def copy_of(seeded: Settings, folder: Path, database_url: Optional[str] = None) -> Settings:
    """The seeded data folder copied to ``folder`` and the seeded database copied (SQLite, into
    ``folder``) or already copied to ``database_url`` (a PostgreSQL copy made from the seeded one
    as its template): each operation starts from them."""
    db.dispose_engines()
    if database_url is None:
        shutil.copy(Path(seeded.database_url.removeprefix("sqlite:///")), folder / "vmemlab.db")
    shutil.copytree(seeded.data_dir, folder / "data")
    settings = Settings(data_dir=folder / "data", database_url=database_url or f"sqlite:///{folder / 'vmemlab.db'}",
                        heartbeat_s=0.05, stale_heartbeats=40)
    use_settings(settings)
    return settings


@contextmanager
def app_copy(seeded: Seeded, folder: Path, database_url: Optional[str] = None) -> Iterator[Flask]:
    """An application on a copy of the seeded state (see copy_of), closed afterwards."""
    try:
        yield create_app(copy_of(seeded.settings, folder, database_url))
    finally:
        use_settings(None)
        db.dispose_engines()


class StatusRecord:
    """Which documented (method, path, status) were answered, and which were never."""

    def __init__(self, schema: Any):
        self.documented: set[tuple[str, str, str]] = set()
        for result in schema.get_all_operations():
            operation = result.ok()
            for status in operation.definition.raw.get("responses", {}):
                if status != "default":
                    self.documented.add((operation.method.upper(), operation.path, str(status)))
        self.seen: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def add(self, case: Any, response: Any) -> None:
        # case.method: also the probes with undocumented methods (405, or 200 for OPTIONS)
        self.add_status(case.method, case.operation.path, response.status_code)

    def add_status(self, method: str, path: str, status: int) -> None:
        self.seen[(method.upper(), path)].add(str(status))
        self.counts[(method.upper(), path, str(status))] += 1

    def summary(self) -> dict[str, Any]:
        """Requests per operation and status, and the documented statuses never answered."""
        operations: dict[str, dict[str, int]] = defaultdict(dict)
        for (method, path, status), count in sorted(self.counts.items()):
            operations[f"{method} {path}"][status] = count
        return {"requests": sum(self.counts.values()), "operations": operations,
                "never_returned": [" ".join(key) for key in self.never_returned()]}

    def never_returned(self) -> list[tuple[str, str, str]]:
        return sorted(key for key in self.documented if key[2] not in self.seen[key[:2]])


def call(case: Any, app: Flask, record: StatusRecord, token: str) -> Any:
    response = case.call(app=app, headers={"Authorization": f"Bearer {token}"})
    record.add(case, response)
    case.validate_response(response, checks=CHECKS)
    return response


def _concrete(path: str) -> str:
    """A URL of an operation's path: id 1, plugin kvm."""
    url = path.replace("{name}", "kvm")
    for parameter in ("host_id", "template_id", "trace_id", "experiment_id", "run_id", "sweep_id", "search_id"):
        url = url.replace("{" + parameter + "}", "1")
    return url


def scripted(schema: Any, app: Flask, record: StatusRecord, token: str) -> None:
    """The statuses random input seldom or never reaches (conflicts, ETags, replays, a broker or a
    trace store failing, a missing token or role), each asked for once on the seeded application;
    every response is checked against the schema like the generated ones."""
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    from service.models import PluginRegistration

    client = authorized(app, token).test_client()

    def request(method: str, path: str, url: str, expected: int, as_client: Any = None, **kwargs: Any) -> Any:
        response = (as_client or client).open(url, method=method, **kwargs)
        assert response.status_code == expected, (method, url, response.status_code, response.get_data(as_text=True))
        schema[path][method].validate_response(response)
        record.add_status(method, path, response.status_code)
        return response

    def raising(exc: BaseException) -> Callable[..., Any]:
        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise exc
        return fail

    for kind, spec in (("hosts", HOST), ("vm-templates", TEMPLATE)):
        collection, item = f"/api/v1/{kind}", f"/api/v1/{kind}/{{{'host_id' if kind == 'hosts' else 'template_id'}}}"
        other = request("POST", collection, collection, 201, json={"name": "other", "spec": spec}).get_json()
        request("POST", collection, collection, 409, json={"name": "other", "spec": spec})
        url = f"{collection}/{other['id']}"
        etag = request("GET", item, url, 200).headers["ETag"]
        request("GET", item, url, 304, headers={"If-None-Match": etag})
        for method, body in (("PUT", {"name": "h1" if kind == "hosts" else "t1", "spec": spec}),
                             ("PATCH", {"name": "h1" if kind == "hosts" else "t1"})):
            request(method, item, url, 412, json=body, headers={"If-Match": '"stale"'})
            request(method, item, url, 409, json=body, headers={"If-Match": etag})
        request("PATCH", item, url, 422, json={}, headers={"If-Match": etag})      # nothing to change
        request("PUT", item, url, 422, json={"name": "no-spec"}, headers={"If-Match": etag})
        etag = request("PATCH", item, url, 200, json={"description": "patched"}, headers={"If-Match": etag}
                       ).headers["ETag"]
        etag = request("PUT", item, url, 200, json={"name": "other", "spec": spec}, headers={"If-Match": etag}
                       ).headers["ETag"]
        for method in ("PUT", "PATCH", "DELETE"):
            request(method, item, url, 428, json={"name": "x", "spec": spec} if method != "DELETE" else None)
        request("DELETE", item, url, 412, headers={"If-Match": '"stale"'})
        request("DELETE", item, url, 204, headers={"If-Match": etag})
        used = f"{collection}/1"       # by the seeded experiments
        request("DELETE", item, used, 409, headers={"If-Match": client.get(used).headers["ETag"]})

    traces, trace = "/api/v1/traces", "/api/v1/traces/{trace_id}"
    body = gzip.compress(b"1\n2\n3\n", mtime=0)
    octets = {"content_type": "application/octet-stream"}
    created = request("POST", traces, f"{traces}?name=small", 201, data=body, **octets).get_json()
    request("POST", traces, f"{traces}?name=again", 200, data=body, **octets)
    with mock.patch("service.api.traces.store_trace", raising(IntegrityError("INSERT", {}, Exception("race")))):
        request("POST", traces, f"{traces}?name=race", 409, data=b"4\n5\n", **octets)
    small = authorized(create_app(dataclasses.replace(app.extensions["vmemlab"].settings, max_trace_bytes=10)),
                       token).test_client()
    response = small.post(f"{traces}?name=big", data=b"1\n" * 100, **octets)
    assert response.status_code == 413, response.get_data(as_text=True)
    schema[traces]["POST"].validate_response(response)
    record.add_status("POST", traces, 413)
    request("DELETE", trace, f"{traces}/{created['id']}", 204)
    request("DELETE", trace, f"{traces}/1", 409)

    runs = "/api/v1/runs/{run_id}"
    request("POST", f"{runs}/cancel", "/api/v1/runs/1/cancel", 409)         # finished
    request("GET", f"{runs}/series", "/api/v1/runs/4/series", 409)          # queued
    request("GET", f"{runs}/series.csv", "/api/v1/runs/4/series.csv", 409)
    request("POST", f"{runs}/cancel", "/api/v1/runs/4/cancel", 202)
    # finished results answer 304 to the ETag they gave (run 1 and experiment 1 are finished)
    for path, url in ((runs, "/api/v1/runs/1"), (f"{runs}/series", "/api/v1/runs/1/series"),
                      ("/api/v1/experiments/{experiment_id}", "/api/v1/experiments/1"),
                      ("/api/v1/experiments/{experiment_id}/comparison", "/api/v1/experiments/1/comparison")):
        etag = request("GET", path, url, 200).headers["ETag"]
        request("GET", path, url, 304, headers={"If-None-Match": etag})

    plugins = "/api/v1/plugins"
    client.get(plugins)                                     # the registry brought up to date
    with db.session_scope(app.extensions["vmemlab"].settings.database_url) as session:
        # kvm as if never approved (a new registration: 201), and a registration whose plugin is gone
        session.execute(update(PluginRegistration).where(PluginRegistration.name == "kvm")
                        .values(enabled=False, approved_version=None))
        session.add(PluginRegistration(name="gone-policy", version="1.0", entry_point="gone:Gone", enabled=True,
                                       approved_version="1.0"))
    request("POST", plugins, plugins, 201, json={"name": "kvm"})
    request("POST", plugins, plugins, 200, json={"name": "kvm", "enabled": True})
    request("PATCH", f"{plugins}/{{name}}", f"{plugins}/kvm", 200, json={"enabled": False})
    request("PATCH", f"{plugins}/{{name}}", f"{plugins}/no-such-policy", 404, json={"enabled": False})
    request("PATCH", f"{plugins}/{{name}}", f"{plugins}/gone-policy", 422, json={"enabled": True})
    request("GET", f"{plugins}/{{name}}", f"{plugins}/kvm", 200)
    request("GET", f"{plugins}/{{name}}", f"{plugins}/no-such-policy", 404)
    request("GET", f"{plugins}/{{name}}", f"{plugins}/a%00b", 422)              # text PostgreSQL cannot store

    experiments = "/api/v1/experiments"
    document = client.get(f"{experiments}/1").get_json()["scenario"]
    document = {**document, "policies": [{"name": "static"}], "name": "keyed"}
    key = {"Idempotency-Key": "fuzz-1"}
    request("POST", experiments, experiments, 201, json=document, headers=key)
    request("POST", experiments, experiments, 200, json=document, headers=key)
    request("POST", experiments, experiments, 409, json={**document, "seed": 99}, headers=key)
    request("POST", experiments, experiments, 400, data="{", content_type="application/json")
    with mock.patch("service.api.experiments.enqueue", raising(ConnectionError("broker down"))):
        response = request("POST", experiments, experiments, 503, json=document)
        assert response.headers["Retry-After"]
    studies = (("/api/v1/sweeps", "sweep_id", "enqueue_group", "service.api.sweeps",
                {"scenario": document, "axes": [{"path": "seed", "values": [5, 6]}]}),
               ("/api/v1/capacity-searches", "search_id", "enqueue_group", "service.api.capacity_searches",
                {"scenario": document, "vm": "a", "sla": {"max_slowdown": 2}, "max_count": 2}))
    request("DELETE", f"{experiments}/{{experiment_id}}", f"{experiments}/3", 409)     # a point of sweep 1
    for collection, id_name, enqueue_name, module, body in studies:
        item = f"{collection}/{{{id_name}}}"
        key = {"Idempotency-Key": f"fuzz-{id_name}"}
        made = request("POST", collection, collection, 202, json=body, headers=key).get_json()
        request("POST", collection, collection, 200, json=body, headers=key)
        request("POST", collection, collection, 409, json={**body, "name": "another"}, headers=key)
        request("POST", collection, collection, 400, data="{", content_type="application/json")
        with mock.patch(f"{module}.{enqueue_name}", raising(ConnectionError("broker down"))):
            assert request("POST", collection, collection, 503, json=body).headers["Retry-After"]
        request("POST", f"{item}/cancel", f"{collection}/{made['id']}/cancel", 202)
        request("DELETE", item, f"{collection}/{made['id']}", 204)
    with mock.patch("service.api.health._broker", raising(ConnectionError("broker down"))):
        request("GET", "/api/v1/health", "/api/v1/health", 503)

    # a body over VMEMLAB_MAX_REQUEST_BYTES (traces have their own limit, above)
    limited = authorized(create_app(dataclasses.replace(app.extensions["vmemlab"].settings, max_request_bytes=1024)),
                         token).test_client()
    for method, path, status in sorted(record.documented):
        if status == "413" and path != traces:
            url = _concrete(path)
            current = client.get(url).headers.get("ETag")
            etag = {"If-Match": current} if current and method in ("PUT", "PATCH") else {}
            response = request(method, path, url, 413, as_client=limited, data=b'{"name": "' + b"x" * 2000 + b'"}',
                               content_type="application/json", headers=etag)
            assert "VMEMLAB_MAX_REQUEST_BYTES" in response.get_json()["message"]

    # without a token where one is needed (401), and with a write token where admin is (403)
    anonymous = FlaskClient(app)
    writer = FlaskClient(app)
    write_token = token_for(app.extensions["vmemlab"].settings.database_url, WRITE, "fuzz write")
    writer.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {write_token}"
    for method, path, status in sorted(record.documented):
        url = _concrete(path)
        if status == "401":
            request(method, path, url, 401, as_client=anonymous, json={})
        elif status == "403":
            request(method, path, url, 403, as_client=writer, json={"name": "kvm", "enabled": True}
                    if method == "POST" else {"enabled": True})
