"""The whole user path through a real HTTP server (werkzeug, in a thread) and a real Celery worker
(a subprocess): on the embedded default (SQLite, SQLite broker) and on the full stack (PostgreSQL
and Redis, when both are reachable)."""
from __future__ import annotations

import csv
import io
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from werkzeug.serving import make_server

from service import db
from service.app import create_app
from service.settings import Settings
from tests.conftest import DATA
from tests.service.conftest import require_redis, truncate_all
from tests.service.test_worker import Workers, _environment

from .conftest import REDIS_URL
from .helpers import HOST, TEMPLATE, experiment, token_for


class Http:
    """A real HTTP server on a free port, serving the app from a thread; a tiny client for it."""

    def __init__(self, app, token: Optional[str] = None):
        self.token = token
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)

    def call(self, method: str, path: str, body: Any = None, data: Optional[bytes] = None,
             headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        if self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, expect: int, body: Any = None, **kw) -> Any:
        status, _, raw = self.call(method, path, body, **kw)
        assert status == expect, f"{method} {path}: {status} {raw[:2000]!r}"
        return json.loads(raw) if raw else None


@contextmanager
def _serve(settings: Settings) -> Iterator[Http]:
    http = Http(create_app(settings), token=token_for(settings.database_url))
    try:
        yield http
    finally:
        http.close()


def user_path(http: Http, workers: Workers, full_stack: bool) -> None:
    workers.start("api1")
    health = http.json("GET", "/api/v1/health", 200)
    assert health["database"]["ok"] and health["broker"]["ok"]

    host = http.json("POST", "/api/v1/hosts", 201, {"name": "lab host", "spec": HOST})
    template = http.json("POST", "/api/v1/vm-templates", 201, {"name": "small vm", "spec": TEMPLATE})
    status, headers, raw = http.call("POST", "/api/v1/traces?name=lackey-sort",
                                     data=(DATA / "lackey_sort.txt.gz").read_bytes(),
                                     headers={"Content-Type": "application/octet-stream"})
    assert status == 201, raw
    trace = json.loads(raw)
    assert trace["length"] == 16_649_205 and trace["footprint_pages"] == 937
    plugin = http.json("POST", "/api/v1/plugins", 201, {"name": "fair-balloon"})
    assert plugin["distribution"] == "vmemlab-example-policy"
    assert http.call("POST", "/api/v1/plugins", {"name": "os:system"})[0] == 422

    doc = experiment(host_id=host["id"], template_id=template["id"], trace_id=trace["id"],
                     policies=("static", "esx", "fair-balloon"))
    key = {"Idempotency-Key": secrets.token_hex(8)}
    exp = http.json("POST", "/api/v1/experiments", 201, doc, headers=key)
    assert http.json("POST", "/api/v1/experiments", 200, doc, headers=key)["id"] == exp["id"]

    deadline = time.monotonic() + 120
    seen = set()
    while True:
        current = http.json("GET", f"/api/v1/experiments/{exp['id']}", 200)
        seen.add(current["status"])
        if current["status"] not in ("queued", "running"):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"runs did not finish: {current['runs']}\n{workers.output()}")
        time.sleep(0.2)
    assert current["status"] == "succeeded", (current["runs"], workers.output())
    assert seen <= {"queued", "running", "succeeded"}, seen
    runs = current["runs"]
    assert [r["policy_name"] for r in runs] == ["static", "esx", "fair-balloon"]

    fair = http.json("GET", f"/api/v1/runs/{runs[2]['id']}", 200)
    assert fair["status"] == "succeeded" and fair["worker"].startswith("api1@") and fair["attempts"] == 1
    assert fair["plugin_distribution"] == "vmemlab-example-policy" and fair["policy_version"] == plugin["version"]
    assert fair["summary"]["slowdown"] is not None and fair["progress"] == 1.0

    series = http.json("GET", f"/api/v1/runs/{fair['id']}/series", 200)
    assert series["epochs"] == 4 and series["series"]["vms"]["b"]["resident_mb"]
    status, headers, raw = http.call("GET", f"/api/v1/runs/{fair['id']}/series?format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert len(rows) == 8 and rows[0]["host_used_mb"]

    comparison = http.json("GET", f"/api/v1/experiments/{exp['id']}/comparison?baseline=static", 200)
    assert comparison["baseline"]["policy"] == "static"
    assert all(r["deltas"]["slowdown"] is not None for r in comparison["runs"])
    ids = ",".join(str(r["id"]) for r in runs)
    across = http.json("GET", f"/api/v1/comparisons?runs={ids}&baseline_run={runs[1]['id']}", 200)
    assert across["baseline"]["policy"] == "esx"

    status, headers, page = http.call("GET", f"/experiments/{exp['id']}/report")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    # static refuses b (its overhead does not fit): a sentence saying why instead of its chart
    assert page.count(b"<svg") == 8 and b"fair-balloon" in page and b"<b>VM b was refused</b>" in page

    by_slowdown = http.json("GET", f"/api/v1/runs?experiment_id={exp['id']}&sort=-slowdown", 200)
    slowdowns = [r["metrics"]["slowdown"] for r in by_slowdown]
    assert slowdowns == sorted(slowdowns, reverse=True) and len(slowdowns) == 3
    assert [r["id"] for r in http.json("GET", f"/api/v1/runs?policy=fair-balloon&host_id={host['id']}", 200)] \
        == [fair["id"]]
    assert [r["id"] for r in http.json("GET", f"/api/v1/runs?fingerprint={fair['fingerprint']}", 200)] == [fair["id"]]

    status, headers, _ = http.call("GET", f"/api/v1/hosts/{host['id']}")
    assert http.call("DELETE", f"/api/v1/hosts/{host['id']}", headers={"If-Match": headers["ETag"]})[0] == 409
    assert http.call("PATCH", f"/api/v1/hosts/{host['id']}", {"description": "x"},
                     headers={"If-Match": '"stale"'})[0] == 412

    health = http.json("GET", "/api/v1/health", 200)
    if full_stack:
        assert health["workers"]["ok"] and any(w.startswith("api1@") for w in health["workers"]["workers"])
    else:
        assert health["workers"]["method"] == "run heartbeats"


def test_embedded_default(tmp_path: Path):
    # nothing here dies, so a generous stale time: on a slow machine a first compile or a busy
    # SQLite file can hold back heartbeats for a few seconds, and a run taken for lost is run twice
    env = _environment(VMEMLAB_DATA_DIR=str(tmp_path / "var"), VMEMLAB_HEARTBEAT_S="0.2",
                       VMEMLAB_STALE_HEARTBEATS="150")
    settings = Settings.from_env(env)
    assert settings.embedded_broker and settings.database_url.startswith("sqlite:///")
    db.upgrade(settings.database_url)
    workers = Workers(env, tmp_path)
    try:
        with _serve(settings) as http:
            user_path(http, workers, full_stack=False)
    finally:
        workers.stop_all()
        db.dispose_engines()


@contextmanager
def _full_stack(postgres_migrated: str, tmp_path: Path, **env_changes: str) -> Iterator[tuple[Http, Workers]]:
    """The API on PostgreSQL and Redis (a queue of its own), served over HTTP, and a Workers
    pool for the test to start; everything the test queued is removed from Redis afterwards."""
    require_redis(REDIS_URL)
    import redis
    queue = f"vmemlab-api-test-{secrets.token_hex(4)}"
    env = _environment(DATABASE_URL=postgres_migrated, REDIS_URL=REDIS_URL, VMEMLAB_QUEUE=queue,
                       VMEMLAB_DATA_DIR=str(tmp_path / "var"), VMEMLAB_HEARTBEAT_S="0.2", **env_changes)
    settings = Settings.from_env(env)
    assert not settings.embedded_broker
    truncate_all(postgres_migrated)
    workers = Workers(env, tmp_path)
    try:
        with _serve(settings) as http:
            yield http, workers
    finally:
        workers.stop_all()
        db.dispose_engines()
        client = redis.Redis.from_url(REDIS_URL)
        ours = list(client.scan_iter(match=f"*{queue}*"))
        if ours:
            client.delete(*ours)


def test_full_stack_postgresql_and_redis(postgres_migrated: str, tmp_path: Path):
    with _full_stack(postgres_migrated, tmp_path) as (http, workers):
        user_path(http, workers, full_stack=True)


def test_hostile_plugins_on_the_full_stack(postgres_migrated: str, tmp_path: Path, hostile: Path):
    """Third-party plugins registered over HTTP and run by a real worker on PostgreSQL and Redis:
    a trust flip and a raising hook each fail their own run, naming the plugin; the static run
    beside them succeeds; a raising constructor is the submission's 422; a plugin whose import
    changes another is listed broken and cannot be registered."""
    path = f"{hostile}:{_environment().get('PYTHONPATH', '')}".rstrip(":")
    with _full_stack(postgres_migrated, tmp_path, PYTHONPATH=path) as (http, workers):
        listed = {p["name"]: p for p in http.json("GET", "/api/v1/plugins", 200)}
        assert listed["hostile-class-trust"]["status"] == "available"
        assert listed["hostile-import"]["status"] == "broken"
        assert "importing it changed trusts_guest" in listed["hostile-import"]["reason"]
        status, _, raw = http.call("POST", "/api/v1/plugins", {"name": "hostile-import"})
        assert status == 422 and b"does not load" in raw
        for name in ("hostile-class-trust", "hostile-hook-raises", "hostile-ctor-raises"):
            assert http.json("POST", "/api/v1/plugins", 201, {"name": name})["status"] == "enabled"

        status, _, raw = http.call("POST", "/api/v1/experiments", experiment(policies=("static", "hostile-ctor-raises")))
        assert status == 422 and b"hostile-ctor-raises' 1.0 (vmemlab-hostile) cannot be created" in raw

        workers.start("hostile1")
        created = http.json("POST", "/api/v1/experiments", 201,
                            experiment(policies=("static", "hostile-class-trust", "hostile-hook-raises")))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = http.json("GET", f"/api/v1/experiments/{created['id']}", 200)["runs"]
            if all(r["status"] in ("succeeded", "failed", "cancelled") for r in runs):
                break
            time.sleep(0.5)
        by_policy = {r["policy_name"]: r for r in runs}
        assert by_policy["static"]["status"] == "succeeded", workers.output()
        flip = by_policy["hostile-class-trust"]
        assert flip["status"] == "failed" and flip["error"].startswith(
            "policy 'hostile-class-trust': setup() changed trusts_guest"), flip
        raised = by_policy["hostile-hook-raises"]
        assert raised["status"] == "failed" and "policy 'hostile-hook-raises' 1.0 raised KeyError" in raised["error"]
        runs_by_version = http.json("GET", "/api/v1/plugins/hostile-class-trust", 200)["runs_by_version"]
        assert [(r["version"], r["runs"]) for r in runs_by_version] == [("1.0", 1)]
