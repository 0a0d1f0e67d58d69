"""The service commands of the CLI: ``db upgrade``, ``serve``, ``worker``, ``up`` and ``submit``.

Argument handling runs in-process with the servers replaced (``os.execv``, gunicorn); ``submit``
is checked against a fake API (a few lines of http.server) for what it sends and how it reports
errors; and once against the real thing: ``vmemlab up`` in a subprocess on a free port with a
temporary data folder (SQLite and the embedded broker), a tiny scenario with two policies
submitted over HTTP, the comparison printed, the report page served, then SIGTERM and both
children gone. docker-compose.yml is read against the same commands.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from service import cli, serving
from service.cli import main
from service.client import Client, error_lines, normalize_base_url
from service.settings import use_settings
from tests.helpers import free_port
from tests.service.helpers import tiny as service_tiny
from tests.test_cli import run

ROOT = Path(__file__).resolve().parents[1]


def tiny(policies=("static", "overcommit")) -> dict:
    """The service tests' two small VMs, under two policies."""
    return service_tiny(policies)


def write_json(path: Path, doc: Any) -> str:
    path.write_text(json.dumps(doc))
    return str(path)



@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """The embedded default in a temporary folder, as the process's settings."""
    var = tmp_path / "var"
    monkeypatch.setenv("VMEMLAB_DATA_DIR", str(var))
    for name in ("DATABASE_URL", "REDIS_URL", "VMEMLAB_TRACE_DIR", "VMEMLAB_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    # serve, worker and up set it for their processes: undone after the test
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    use_settings(None)
    yield var
    from service import db

    db.dispose_engines()
    use_settings(None)


# --- db upgrade ------------------------------------------------------------------------------------

def test_db_upgrade_migrates_to_head_once(embedded_env, capsys):
    from service import db

    code, out, err = run(capsys, "db", "upgrade")
    assert code == 0, err
    head = db.head_revision()
    assert f"database sqlite:///{embedded_env / 'vmemlab.db'} at revision {head} (migrated from empty)" in out
    assert db.current_revision() == head
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "already at the latest revision" in out


def test_tokens_create_list_revoke(embedded_env, capsys):
    from service import auth, db

    code, out, err = run(capsys, "tokens", "create", "--name", "ci", "--role", "admin")
    assert code == 0 and "shown only now" in err
    token = out.strip()
    assert re.fullmatch(r"vml_[A-Za-z0-9_-]{43}", token)        # alone on stdout: TOKEN=$(vmemlab tokens create ...)
    run(capsys, "tokens", "create", "--name", "alice")
    code, out, _ = run(capsys, "tokens", "list")
    assert code == 0 and re.search(rf"^\s*1\s+ci\s+admin\s+{re.escape(token[:12])}\.\.\.", out, re.M), out
    assert re.search(r"^\s*2\s+alice\s+write\s", out, re.M) and token not in out
    with db.session_scope() as session:
        assert auth.authenticate(session, token).role == "admin"
    code, out, _ = run(capsys, "tokens", "revoke", token[:12])
    assert code == 0 and "token 1 'ci'" in out and "revoked" in out
    with db.session_scope() as session:
        assert auth.authenticate(session, token) is None
    assert "ci" not in run(capsys, "tokens", "list")[1] and "ci" in run(capsys, "tokens", "list", "--all")[1]
    code, _, err = run(capsys, "tokens", "revoke", "ci")
    assert code == 2 and "no unrevoked token" in err
    code, _, err = run(capsys, "tokens", "create", "--name", "x", "--role", "root")
    assert code == 2 and "invalid choice" in err


def test_tokens_list_on_a_database_not_migrated_yet_says_what_to_do(embedded_env, capsys):
    for argv in (("tokens", "list"), ("tokens", "revoke", "1")):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "is at revision empty" in err and "vmemlab db upgrade" in err, err
        assert "Traceback" not in err and "SELECT" not in err


def test_serve_stores_a_configured_admin_token_or_warns_without_any(embedded_env, fake_gunicorn, monkeypatch, capsys):
    from service import auth, db

    code, out, _ = run(capsys, "serve", "--port", str(free_port()))
    assert code == 0 and "warning: no API tokens: every write will be refused (401)" in out
    token = "vml_" + "k" * 40
    monkeypatch.setenv("VMEMLAB_ADMIN_TOKEN", token)
    use_settings(None)
    code, out, _ = run(capsys, "serve", "--port", str(free_port()))
    assert code == 0 and "VMEMLAB_ADMIN_TOKEN stored as an admin token" in out and "warning" not in out
    code, out, _ = run(capsys, "serve", "--port", str(free_port()))
    assert code == 0 and "VMEMLAB_ADMIN_TOKEN" not in out               # stored once
    with db.session_scope() as session:
        assert auth.authenticate(session, token).role == "admin"
        auth.revoke_token(session, auth.CONFIGURED_NAME)
    code, out, _ = run(capsys, "serve", "--port", str(free_port()))
    assert "was revoked and stays revoked" in out
    with db.session_scope() as session:
        assert auth.authenticate(session, token) is None
    rotated = "vml_" + "r" * 40                                           # a new value revokes the old one
    monkeypatch.setenv("VMEMLAB_ADMIN_TOKEN", rotated)
    use_settings(None)
    code, out, _ = run(capsys, "serve", "--port", str(free_port()))
    assert "VMEMLAB_ADMIN_TOKEN stored as an admin token (earlier values revoked)" in out
    second = "vml_" + "s" * 40
    monkeypatch.setenv("VMEMLAB_ADMIN_TOKEN", second)
    use_settings(None)
    run(capsys, "serve", "--port", str(free_port()))
    with db.session_scope() as session:
        assert auth.authenticate(session, rotated) is None and auth.authenticate(session, second).role == "admin"
    monkeypatch.setenv("VMEMLAB_ADMIN_TOKEN", "short")
    use_settings(None)
    code, _, err = run(capsys, "serve", "--port", str(free_port()))
    assert code == 2 and "VMEMLAB_ADMIN_TOKEN: a token needs at least 32 characters" in err


def test_db_needs_an_action(capsys):
    code, _, err = run(capsys, "db")
    assert code == 2 and "ACTION" in err


def test_db_upgrade_bad_setting_is_an_error_line(embedded_env, monkeypatch, capsys):
    monkeypatch.setenv("VMEMLAB_HEARTBEAT_S", "soon")
    use_settings(None)
    code, _, err = run(capsys, "db", "upgrade")
    assert code == 2 and err.startswith("error: VMEMLAB_HEARTBEAT_S='soon'") and "Traceback" not in err


def test_db_upgrade_unreachable_database_is_an_error_line(embedded_env, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:secret@127.0.0.1:1/none")
    use_settings(None)
    code, _, err = run(capsys, "db", "upgrade")
    assert code == 2 and err.startswith("error: database postgresql://nobody:***@127.0.0.1:1/none: cannot migrate")
    assert "secret" not in err and "Traceback" not in err


# --- worker --------------------------------------------------------------------------------------

class Exec(Exception):
    """os.execv, replaced: the argv it would have run."""


@pytest.fixture
def fake_exec(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def execv(path, argv):
        calls.append(list(argv))
        raise Exec()

    monkeypatch.setattr(os, "execv", execv)
    return calls


def test_worker_execs_celery_for_the_one_app(embedded_env, fake_exec, capsys):
    with pytest.raises(Exec):
        main(["worker", "--concurrency", "3"])
    argv = fake_exec[0]
    assert argv[:3] == [sys.executable, "-m", "celery"]
    assert argv[argv.index("-A") + 1] == "service.celery_app:app" and "worker" in argv
    assert "--concurrency=3" in argv and "--loglevel=INFO" in argv
    # the embedded broker has no broadcast: no gossip, mingle or event heartbeats
    assert {"--without-gossip", "--without-mingle", "--without-heartbeat"} <= set(argv)
    assert embedded_env.is_dir()


def test_worker_on_redis_keeps_remote_control(embedded_env, fake_exec, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    use_settings(None)
    with pytest.raises(Exec):
        main(["worker", "--hostname", "sim1@%h", "--loglevel", "warning", "--quiet"])
    argv = fake_exec[0]
    assert "--without-gossip" not in argv and "--hostname=sim1@%h" in argv and "--loglevel=WARNING" in argv
    assert argv.index("--quiet") < argv.index("-A")      # a celery option, before the command
    assert "--concurrency" not in " ".join(argv)         # Celery's default: one per core


@pytest.mark.parametrize("argv, words", [
    (["worker", "--concurrency", "0"], "must be at least 1"),
    (["worker", "--concurrency", "two"], "not a whole number"),
    (["worker", "--loglevel", "loud"], "invalid choice"),
    (["serve", "--port", "70000"], "not a port number"),
    (["up", "--port", "http"], "not a port number"),
    (["submit"], "SCENARIO.json"),
])
def test_bad_arguments(argv, words, capsys, fake_exec):
    code, _, err = run(capsys, *argv)
    assert code == 2 and words in err and not fake_exec


# --- serve -----------------------------------------------------------------------------------------

@pytest.fixture
def fake_gunicorn(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    monkeypatch.setattr(serving, "api_available", lambda: True)
    monkeypatch.setattr(serving, "run_gunicorn", lambda options, factory: calls.append(dict(options, factory=factory)))
    return calls


def test_serve_migrates_then_runs_gunicorn(embedded_env, fake_gunicorn, capsys):
    from service import db

    port = free_port()
    code, out, err = run(capsys, "serve", "--port", str(port), "--workers", "3", "--threads", "2")
    assert code == 0, err
    assert db.current_revision() == db.head_revision() and "at revision" in out
    options = fake_gunicorn[0]
    assert options["bind"] == [f"127.0.0.1:{port}"] and options["workers"] == 3 and options["threads"] == 2
    assert options["worker_class"] == "gthread" and options["preload_app"] is False
    assert options["accesslog"] is None and options["factory"] is serving.load_app
    assert options["control_socket_disable"] is True     # no per-user socket shared by two servers
    # the arbiter read the database (tokens): nothing pooled may reach the forked workers
    assert options["post_fork"] is serving.forget_inherited_connections and not db._engines


def test_serve_defaults_and_no_upgrade(embedded_env, fake_gunicorn, capsys):
    code, out, _ = run(capsys, "serve", "--no-upgrade", "--host", "0.0.0.0", "--port", str(free_port()),
                       "--access-log")
    assert code == 0 and out == "" and not (embedded_env / "vmemlab.db").exists()
    options = fake_gunicorn[0]
    assert options["workers"] == serving.default_web_workers() and 2 <= options["workers"] <= 8
    assert options["bind"][0].startswith("0.0.0.0:") and options["accesslog"] == "-"


def test_serve_refuses_a_busy_port(embedded_env, fake_gunicorn, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = run(capsys, "serve", "--no-upgrade", "--port", str(busy.getsockname()[1]))
    assert code == 2 and "cannot listen on 127.0.0.1:" in err and "another --port" in err
    assert not fake_gunicorn


def test_serve_and_up_without_the_api_module(embedded_env, monkeypatch, capsys):
    monkeypatch.setattr(serving, "api_available", lambda: False)
    for command in ("serve", "up"):
        code, _, err = run(capsys, command, "--port", str(free_port()))
        assert code == 2 and "service/app.py (create_app) is missing" in err


def test_up_refuses_a_busy_port_before_starting_anything(embedded_env, monkeypatch, capsys):
    monkeypatch.setattr(serving, "api_available", lambda: True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, out, err = run(capsys, "up", "--port", str(busy.getsockname()[1]))
    assert code == 2 and "cannot listen" in err and out == ""


def test_up_checks_the_scenarios_it_will_submit_first(embedded_env, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(serving, "api_available", lambda: True)
    code, out, err = run(capsys, "up", "--port", str(free_port()), "--submit", str(tmp_path / "nowhere.json"))
    assert code == 2 and "nowhere.json: no such file" in err and out == ""


# --- the supervisor of `up` -------------------------------------------------------------------------

SLEEPER = ("import signal, sys, time\n"
           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
           "time.sleep(60)\n")


def test_supervisor_forwards_a_stop_to_every_child(tmp_path):
    out = open(tmp_path / "log", "w+")
    supervisor = serving.Supervisor(out)
    a = supervisor.start("a", [sys.executable, "-c", SLEEPER])
    b = supervisor.start("b", [sys.executable, "-c", SLEEPER])
    time.sleep(0.5)
    supervisor.stop("test")
    assert supervisor.wait() == 0
    assert a.process.returncode == 0 and b.process.returncode == 0
    assert a.signals_sent == [signal.SIGTERM] == b.signals_sent


def test_supervisor_stops_the_others_when_one_dies(tmp_path):
    out = open(tmp_path / "log", "w+")
    supervisor = serving.Supervisor(out)
    survivor = supervisor.start("api", [sys.executable, "-c", SLEEPER])
    supervisor.start("worker", [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert supervisor.wait() == 1
    assert survivor.process.returncode == 0 and survivor.signals_sent == [signal.SIGTERM]
    out.seek(0)
    assert "worker exited with status 3" in out.read()


def test_supervisor_escalates_on_a_second_stop(tmp_path):
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    supervisor = serving.Supervisor(open(tmp_path / "log", "w+"))
    child = supervisor.start("stubborn", [sys.executable, "-c", stubborn])
    time.sleep(0.5)
    supervisor.stop("first")
    time.sleep(0.3)
    assert child.alive()
    supervisor.stop("second")                        # SIGQUIT: the default action ends it
    assert supervisor.wait() == 0
    assert child.signals_sent == [signal.SIGTERM, signal.SIGQUIT]


# --- submit against a fake API ---------------------------------------------------------------------

class FakeAPI:
    """Just enough of the API for ``submit``: POST experiments, GET runs, the report page."""

    def __init__(self, handler: Callable[[str, str, Any], tuple[int, Any]]):
        self.requests: list[tuple[str, str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                outer.requests.append((method, self.path, body))
                status, payload = handler(method, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def summary(policy: str, slowdown: float) -> dict:
    return {"policy": policy, "policy_version": "1.0.0", "slowdown": slowdown, "fairness": 1.0,
            "engine_version": "0.1.0", "host": {"peak_used_mb": 400.0},
            "vms": [{"name": "a", "state": "ran", "slowdown": slowdown, "refs_done": 1000}]}


@pytest.fixture
def fake_api() -> Iterator[Callable[..., FakeAPI]]:
    made: list[FakeAPI] = []

    def make(handler):
        api = FakeAPI(handler)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


def happy_handler(fail: str | None = None):
    polls: dict[int, int] = {}
    runs: dict[int, str] = {}

    def handler(method, path, body):
        if method == "POST" and path == "/api/v1/experiments":
            names = [p["name"] for p in body.get("policies", [])] or ["static"]
            for i, name in enumerate(names):
                runs[10 + i] = name
            return 201, {"id": 7, "name": body.get("name"), "runs": [
                {"id": 10 + i, "policy": name, "status": "queued", "progress": 0.0} for i, name in enumerate(names)]}
        match = re.fullmatch(r"/api/v1/runs/(\d+)", path)
        if method == "GET" and match:
            run_id = int(match.group(1))
            polls[run_id] = polls.get(run_id, 0) + 1
            name = runs[run_id]
            if polls[run_id] < 3:
                return 200, {"id": run_id, "policy": name, "status": "running", "progress": 0.3 * polls[run_id]}
            if name == fail:
                return 200, {"id": run_id, "policy": name, "status": "failed", "progress": 0.5,
                             "error": f"policy {name!r} raised ValueError: boom"}
            return 200, {"id": run_id, "policy": name, "status": "succeeded", "progress": 1.0,
                         "summary": summary(name, 1.0 + run_id / 10)}
        return 404, {"code": 404, "message": "not found"}

    return handler


def test_submit_waits_and_prints_the_comparison(fake_api, tmp_path, capsys):
    api = fake_api(happy_handler())
    path = write_json(tmp_path / "s.json", tiny(("static", "esx", "kvm")))
    code, out, err = run(capsys, "submit", path, "--url", api.url, "--policy", "static", "--policy",
                         "overcommit", "--param", "overcommit.compression=true", "--wait", "--poll", "0.01")
    assert code == 0, err
    method, target, body = api.requests[0]
    assert (method, target) == ("POST", "/api/v1/experiments")
    # --policy replaces the scenario's list; --param sets a parameter of one of them
    assert body["policies"] == [{"name": "static", "params": {}},
                                {"name": "overcommit", "params": {"compression": True}}]
    assert body["vms"] == tiny()["vms"]
    assert "experiment 7: 2 runs: static (run 10), overcommit (run 11)" in out
    assert "Scenario 'tiny': 2 VMs on a 512 MB host, 2 s simulated, seed 3 (experiment 7)" in out
    assert re.search(r"^a\s+static\s+ran\s+2\.00x", out, re.M) and re.search(r"^a\s+overcommit\s+ran\s+2\.10x", out, re.M)
    assert out.rstrip().endswith(f"report: {api.url}/experiments/7/report")
    # progress on stderr, a line per run at each step on a pipe
    assert "[static]  30%" in err and "[overcommit] succeeded" in err


def test_submit_without_wait_prints_ids_and_report(fake_api, tmp_path, capsys):
    api = fake_api(happy_handler())
    code, out, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url + "/api/v1/")
    assert code == 0, err
    assert out == ("experiment 7: 2 runs: static (run 10), overcommit (run 11)\n"
                   f"report: {api.url}/experiments/7/report\n")
    assert [r[0] for r in api.requests] == ["POST"]
    assert api.requests[0][2]["policies"] == tiny()["policies"]    # the scenario's own list, untouched


def test_submit_json_output(fake_api, tmp_path, capsys):
    api = fake_api(happy_handler())
    code, out, _ = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url,
                       "--wait", "--json", "--quiet", "--poll", "0.01")
    assert code == 0
    summaries = json.loads(out[out.index("["):out.rindex("]") + 1])
    assert [s["policy"] for s in summaries] == ["static", "overcommit"]


def test_submit_reports_a_failed_run(fake_api, tmp_path, capsys):
    api = fake_api(happy_handler(fail="overcommit"))
    code, out, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url,
                         "--wait", "--quiet", "--poll", "0.01")
    assert code == 1
    assert "error: run 11 (overcommit) failed: policy 'overcommit' raised ValueError: boom" in err
    assert re.search(r"^a\s+static\s+ran", out, re.M) and "report: " in out


def test_submit_shows_validation_errors_one_per_line(fake_api, tmp_path, capsys):
    api = fake_api(lambda method, path, body: (422, {
        "code": 422, "status": "Unprocessable Entity",
        "errors": {"json": {"vms": {"0": {"memory_mb": ["Must be at least 1."]}},
                            "policies": {"1": {"name": ["unknown policy 'nosuch'"]}}}}}))
    code, out, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url, "--wait")
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: vms[0].memory_mb: Must be at least 1.",
                                "error: policies[1].name: unknown policy 'nosuch'"]


def test_submit_server_error_is_exit_1(fake_api, tmp_path, capsys):
    api = fake_api(lambda method, path, body: (500, {"message": "Internal Server Error"}))
    code, _, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url)
    assert code == 1 and err.startswith(f"error: POST {api.url}/api/v1/experiments: 500") and "Traceback" not in err


def test_submit_unreachable_server(tmp_path, capsys):
    port = free_port()                      # nothing listens there
    code, out, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", f"127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert err == (f"error: cannot reach the vmemlab API at http://127.0.0.1:{port}: connection refused "
                   "(is `vmemlab serve` or `vmemlab up` running?)\n")


@pytest.mark.parametrize("content, words", [
    (None, "nowhere.json: no such file"),
    ("{'duration_s': 1}", "invalid JSON at line 1 column 2"),
    ("[1, 2]", "a scenario must be a JSON object"),
])
def test_submit_file_mistakes(tmp_path, capsys, content, words):
    path = tmp_path / "nowhere.json"
    if content is not None:
        path.write_text(content)
    code, _, err = run(capsys, "submit", str(path), "--url", "http://127.0.0.1:9")
    assert code == 2 and err.startswith("error: ") and words in err


def test_submit_bad_param_and_url(tmp_path, capsys):
    path = write_json(tmp_path / "s.json", tiny())
    code, _, err = run(capsys, "submit", path, "--param", "esx.idle_tax_pct=0")
    assert code == 2 and "policy 'esx' is not among the policies run" in err
    code, _, err = run(capsys, "submit", path, "--url", "ftp://example.org")
    assert code == 2 and "error: --url: " in err


def test_client_helpers():
    assert normalize_base_url("127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert normalize_base_url("http://h:1/api/v1/") == "http://h:1"
    assert normalize_base_url("https://h/prefix/") == "https://h/prefix"
    assert Client("h:1").report_url(3) == "http://h:1/experiments/3/report"
    assert error_lines({"errors": {"vms[0].memory_mb": ["too big"]}}) == ["vms[0].memory_mb: too big"]
    assert error_lines({"message": "no experiment 9"}) == ["no experiment 9"]
    assert error_lines({"errors": {"json": {"_schema": ["an experiment must be a JSON object"]}}}) == [
        "an experiment must be a JSON object"]


def test_the_client_never_sends_its_token_to_another_host_on_a_redirect():
    seen: list[tuple[int, Any]] = []

    def server(handler_get):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                handler_get(self)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    def answer(request):
        seen.append((request.server.server_port, request.headers.get("Authorization")))
        if request.path.endswith("/runs/1"):        # a second hop, on the other host
            request.send_response(302)
            request.send_header("Location", f"http://127.0.0.1:{request.server.server_port}/api/v1/runs/2")
            request.end_headers()
            return
        body = b'{"id": 2}'
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    other = server(answer)

    def redirect_away(request):
        seen.append((request.server.server_port, request.headers.get("Authorization")))
        request.send_response(302)
        request.send_header("Location", f"http://127.0.0.1:{other.server_port}/api/v1/runs/1")
        request.end_headers()

    first = server(redirect_away)
    try:
        assert Client(f"127.0.0.1:{first.server_port}", token="vml_secret").run(1) == {"id": 2}
    finally:
        first.shutdown()
        other.shutdown()
    assert seen == [(first.server_port, "Bearer vml_secret"), (other.server_port, None), (other.server_port, None)]


# --- the real service: vmemlab up -------------------------------------------------------------------

def _env(embedded_env: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL") and not (k.startswith("VMEMLAB_") and k != "VMEMLAB_NUMBA_CACHE_DIR")}
    env["VMEMLAB_DATA_DIR"] = str(embedded_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n--- output\n{log()[-6000:]}")
        time.sleep(0.2)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:                                 # a zombie is gone too (nothing runs), but say so
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_up_serves_submit_compares_and_stops(tmp_path, capsys):
    port = free_port()
    scenario = write_json(tmp_path / "tiny.json", tiny(("static", "overcommit")))
    log_path = tmp_path / "up.log"
    log = open(log_path, "wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up", "--port", str(port), "--concurrency", "2",
         "--submit", scenario],
        cwd=ROOT, env=_env(tmp_path / "var"), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    text = lambda: log_path.read_text(errors="replace")  # noqa: E731
    try:
        # up --submit: the comparison of the scenario's two policies, then it goes on serving
        _wait_for(lambda: "until stopped" in text() or up.poll() is not None, 240, "vmemlab up --submit", text)
        output = text()
        assert up.poll() is None, output
        assert f"API     http://127.0.0.1:{port}/api/v1" in output
        assert re.search(r"^a\s+static\s+ran\s+1\.00x", output, re.M), output
        assert re.search(r"^b\s+overcommit\s+ran", output, re.M), output
        assert re.search(rf"report: http://127\.0\.0\.1:{port}/experiments/\d+/report", output), output
        pids = {name: int(pid) for name, pid in re.findall(r"vmemlab up: (API|worker) .*\(.*pid (\d+)\)", output)}
        assert set(pids) == {"API", "worker"}, output

        # a first start prints an admin token (the database had none) instead of serving open;
        # up --submit used a temporary token of its own, revoked when up stops
        token = re.search(r"^vmemlab up: token   (vml_\S+)$", output, re.M).group(1)
        url = f"http://127.0.0.1:{port}"
        code, out, err = run(capsys, "submit", scenario, "--url", url)
        assert code == 2 and "Authorization: Bearer" in err and "VMEMLAB_TOKEN" in err, err

        # vmemlab submit against it, with --policy replacing the scenario's list
        code, out, err = run(capsys, "submit", scenario, "--url", url, "--token", token, "--policy", "static",
                             "--policy", "dynamic-memory", "--wait", "--timeout", "180", "--poll", "0.2")
        assert code == 0, err + out + text()
        assert re.search(r"^a\s+static\s+ran", out, re.M) and re.search(r"^a\s+dynamic-memory\s+ran", out, re.M)
        assert "\nHost\n" in out and re.search(r"^dynamic-memory\s+\S+\s+1 ran, 1 refused", out, re.M), out
        report = re.search(r"^report: (\S+)$", out, re.M).group(1)
        with urllib.request.urlopen(report, timeout=30) as response:
            assert response.status == 200
            assert response.headers.get("Content-Type", "").startswith("text/html")
            page = response.read().decode()
        assert "dynamic-memory" in page
        experiment_id = int(report.rstrip("/").split("/")[-2])
        comparison = Client(url).comparison(experiment_id)
        assert len(comparison["runs"]) == 2

        # /metrics: the database's runs, and what the worker's processes counted (one metrics folder)
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            metrics = response.read().decode()
        assert 'vmemlab_runs{status="succeeded"} 4.0' in metrics, metrics
        assert 'vmemlab_run_duration_seconds_count{status="succeeded"} 4.0' in metrics, metrics
        refs = re.search(r"^vmemlab_references_simulated_total (\S+)$", metrics, re.M)
        assert refs and float(refs.group(1)) > 0, metrics

        # SIGTERM: both children stop, up exits 0 and leaves nothing behind
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0, text()
        output = text()
        assert "stopping (received SIGTERM)" in output
        assert re.search(r"worker \(pid \d+\) exited with status 0", output), output
        assert re.search(r"api \(pid \d+\) exited with status 0", output), output
        for name, pid in pids.items():
            assert _gone(pid), f"{name} (pid {pid}) still runs after up stopped"
        from service import db
        from service.auth import list_tokens

        with db.session_scope(f"sqlite:///{tmp_path / 'var' / 'vmemlab.db'}") as session:
            tokens = {t.name: t.revoked_at for t in list_tokens(session, include_revoked=True)}
        db.dispose_engines()
        assert tokens.keys() == {"vmemlab up (first start)", "vmemlab up --submit (temporary)"}
        assert tokens["vmemlab up (first start)"] is None and tokens["vmemlab up --submit (temporary)"] is not None
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
        log.close()


# --- docker-compose.yml, read against the commands ----------------------------------------------------

COMPOSE = (ROOT / "docker-compose.yml").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _compose_commands() -> dict[str, list[str]]:
    """``service name -> command`` from the compose file (its commands are JSON-style lists)."""
    commands, service = {}, None
    for line in COMPOSE.splitlines():
        top = re.match(r"^  ([a-z][\w-]*):\s*$", line)
        if top:
            service = top.group(1)
        found = re.match(r"^    command:\s*(\[.*\])\s*$", line)
        if found and service:
            commands[service] = json.loads(found.group(1))
    return commands


def test_compose_runs_the_cli_commands():
    commands = _compose_commands()
    assert set(commands) >= {"api", "worker", "redis"}
    parser = cli.build_parser()
    for service in ("api", "worker"):
        argv = commands[service]
        assert argv[0] == "vmemlab", argv
        args = parser.parse_args(argv[1:])          # the compose command is a valid CLI command
        assert args.command == {"api": "serve", "worker": "worker"}[service]
    api = parser.parse_args(commands["api"][1:])
    assert api.host == "0.0.0.0" and api.port == 8000 and not api.no_upgrade   # migrations at start
    for needle in ("DATABASE_URL: postgresql://vmemlab:vmemlab@postgres:5432/vmemlab",
                   "REDIS_URL: redis://redis:6379/0", "POSTGRES_USER: vmemlab", "POSTGRES_PASSWORD: vmemlab",
                   "POSTGRES_DB: vmemlab", "/api/v1/health", "pg_isready", "redis-cli", "inspect ping",
                   "condition: service_healthy", "VMEMLAB_ADMIN_TOKEN: ${VMEMLAB_ADMIN_TOKEN:-}"):
        assert needle in COMPOSE, needle
    assert COMPOSE.count("healthcheck:") == 4


def test_dockerfile_installs_the_package_and_runs_unprivileged():
    assert DOCKERFILE.count("FROM python:3.11-slim") == 2
    assert "pip wheel --no-deps" in DOCKERFILE and "pip install /wheels/*.whl" in DOCKERFILE
    assert re.search(r"^USER vmemlab$", DOCKERFILE, re.M)
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1))
    assert cmd[0] == "vmemlab" and cli.build_parser().parse_args(cmd[1:]).command == "serve"
    # what the wheel must carry for `vmemlab db upgrade` to work from site-packages
    for folder in ("service", "plugins", "migrations"):
        assert f"COPY {folder} ./{folder}" in DOCKERFILE
