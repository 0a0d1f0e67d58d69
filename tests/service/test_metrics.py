"""GET /metrics: requests by route and status, runs by status and what the workers' runs did, in
one process and in prometheus-client's multiprocess mode (several processes writing, one scrape)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import db, tasks
from service.experiments import create_experiment
from service.models import Run
from service.prometheus import observe_run
from service.serving import forget_dead_worker_metrics, prepare_metrics_dir, process_id
from tests.helpers import free_port

from .helpers import tiny

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> Optional[float]:
    return samples(text).get((name, frozenset(labels.items())))


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain" and "version=" in response.content_type
    return response.get_data(as_text=True)


def test_requests_are_counted_by_route_pattern_and_status(settings):
    from service.app import create_app

    client = create_app(settings).test_client()
    health = {"method": "GET", "route": "/api/v1/health", "status": "200"}
    one = {"method": "GET", "route": "/api/v1/experiments/<int:experiment_id>", "status": "404"}
    before = scrape(client)
    for _ in range(3):
        assert client.get("/api/v1/health").status_code == 200
    client.get("/api/v1/experiments/987654")
    client.get("/api/v1/experiments/987655")
    client.get("/no/such/page")
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("vmemlab_http_requests_total", **health) == 3
    assert delta("vmemlab_http_requests_total", **one) == 2           # one series for every id
    assert delta("vmemlab_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("vmemlab_http_request_duration_seconds_count", method="GET", route="/api/v1/health") == 3
    assert delta("vmemlab_http_request_duration_seconds_bucket", method="GET", route="/api/v1/health",
                 le="+Inf") == 3
    assert not any("987654" in line for line in after.splitlines())
    assert not any('route="/metrics"' in line for line in after.splitlines())     # scrapes are not requests
    assert value(after, "vmemlab_database_up") == 1


def test_runs_by_status_run_durations_references_heartbeats_and_queue_depth(settings):
    from service.app import create_app

    client = create_app(settings).test_client()
    with db.session_scope() as session:
        ids = [r.id for r in create_experiment(session, tiny(("static", "dynamic-memory"))).runs]
    before = scrape(client)
    assert value(before, "vmemlab_runs", status="queued") == 2
    assert value(before, "vmemlab_runs", status="succeeded") == 0
    assert value(before, "vmemlab_queue_depth") is not None          # the embedded broker answers

    outcome = tasks.execute_run(ids[0], worker="w1")
    assert outcome == "succeeded"
    observe_run(ids[0], outcome)           # what the worker's task_postrun does
    observe_run(ids[1], "lost")            # an attempt that did not end the run counts nothing
    with db.session_scope() as session:     # the other run as a worker holds it
        run = session.get(Run, ids[1])
        run.status, run.worker, run.heartbeat_at = "running", "host-a pid 7", tasks.utcnow()
        summary = session.get(Run, ids[0]).summary
    after = scrape(client)
    assert value(after, "vmemlab_runs", status="succeeded") == 1
    assert value(after, "vmemlab_runs", status="running") == 1
    assert value(after, "vmemlab_runs", status="queued") == 0
    age = value(after, "vmemlab_worker_heartbeat_age_seconds", worker="host-a pid 7")
    assert age is not None and 0 <= age < 60

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    refs = sum(vm["refs_done"] for vm in summary["vms"])
    assert refs > 0 and delta("vmemlab_references_simulated_total") == refs
    assert delta("vmemlab_run_duration_seconds_count", status="succeeded") == 1
    assert delta("vmemlab_run_references_per_second_count") == 1


def test_a_scrape_answers_with_the_database_down():
    from service.prometheus import scrape as scrape_text

    def no_database():
        raise RuntimeError("connection refused")

    assert value(scrape_text(no_database).decode(), "vmemlab_database_up") == 0


WRITER = textwrap.dedent("""
    import sys
    from service import prometheus
    n = int(sys.argv[1])
    prometheus.REQUESTS.labels("GET", "/api/v1/health", "200").inc(n)
    prometheus.LATENCY.labels("GET", "/api/v1/health").observe(0.01)
    prometheus.REFERENCES.inc(1000 * n)
    prometheus.IN_PROGRESS.inc()
    print(prometheus.MULTIPROCESS)
""")
SCRAPER = textwrap.dedent("""
    from service.prometheus import scrape
    def no_database():
        raise RuntimeError("no database in this test")
    print(scrape(no_database).decode())
""")


def _python(code: str, folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_two_processes_write_and_one_scrape_adds_them_up(tmp_path: Path, monkeypatch):
    folder = tmp_path / "metrics"
    folder.mkdir()
    assert _python(WRITER, folder, "2").stdout.strip() == "True"
    assert _python(WRITER, folder, "5").stdout.strip() == "True"
    files = sorted(p.name for p in folder.iterdir())
    host = process_id(0)[:-1]
    assert files and all(f"_{host}" in name for name in files)          # named by host and pid
    text = _python(SCRAPER, folder).stdout
    assert value(text, "vmemlab_http_requests_total", method="GET", route="/api/v1/health", status="200") == 7
    assert value(text, "vmemlab_http_request_duration_seconds_count", method="GET", route="/api/v1/health") == 2
    assert value(text, "vmemlab_references_simulated_total") == 7000
    assert value(text, "vmemlab_http_requests_in_progress") == 2        # both writers' live gauges

    # gunicorn's child_exit drops a dead worker's live gauges, not its counters
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    dead_pid = int(sorted(f for f in files if f.startswith("gauge_livesum"))[0].rsplit("-", 1)[1][:-3])
    forget_dead_worker_metrics(None, SimpleNamespace(pid=dead_pid))
    text = _python(SCRAPER, folder).stdout
    assert value(text, "vmemlab_http_requests_in_progress") == 1
    assert value(text, "vmemlab_http_requests_total", method="GET", route="/api/v1/health", status="200") == 7

    # a new start forgets the processes of this host that are gone (both writers)
    assert prepare_metrics_dir(tmp_path / "unused") == str(folder)      # the variable set wins
    assert list(folder.iterdir()) == []
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert prepare_metrics_dir(tmp_path) == str(tmp_path / "prometheus")  # the default
    assert (tmp_path / "prometheus").is_dir()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_under_gunicorn_every_worker_answers_the_sum(tmp_path: Path):
    """`vmemlab serve` with two worker processes: whichever answers a scrape reports every
    request of both."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VMEMLAB_", "PROMETHEUS_")) and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(VMEMLAB_DATA_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2", "--threads", "1"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"{base}/api/v1/health")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "serve.log").read_text())
                time.sleep(0.2)
        for _ in range(19):
            _get(f"{base}/api/v1/health")
        counts = {value(_get(f"{base}/metrics"), "vmemlab_http_requests_total",
                        method="GET", route="/api/v1/health", status="200") for _ in range(6)}
        assert counts == {20.0}, counts
        assert list((tmp_path / "var" / "prometheus").glob("counter_*.db"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
