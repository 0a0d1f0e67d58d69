"""The service commands of the CLI: ``db upgrade``, ``serve``, ``worker``, ``up`` and ``submit``.

Argument handling runs in-process with the servers replaced (``os.execv``, gunicorn); ``submit``
against a fake API is in test_cli_submit.py, here it runs once against the real thing: ``vmemlab
up`` in a subprocess on a free port with a temporary data folder (SQLite and the embedded broker), a tiny scenario with two policies
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
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from service import cli, serving
from service.cli import main
from service.client import Client
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
