"""API benchmark: prints figures, asserts nothing about speed.

1. Stores 1,000 finished runs with realistic summaries, directly through service.experiments and
   the models (bench/api_store.py), in SQLite (the embedded default, a temporary folder) or, with
   ``--postgres``, in a scratch database on that PostgreSQL server (dropped at the end).
2. Starts ``vmemlab up`` on a free loopback port (PostgreSQL: with Redis as the broker), or uses
   ``--url`` (then runs are inserted only with ``--database-url``, the service's DATABASE_URL).
3. Drives the read mix users hit most, each request one of: a run, a run's series, an
   experiment, its comparison, the runs list sorted by slowdown. One client alone (the cost of a
   request); 50 back to back (saturation), with plain GETs and with clients that send back the
   ETag they got (If-None-Match, as browsers and polling dashboards do); 200 clients on
   ``GET /runs?page_size=100``; then paced (each client waits about ``--think-ms`` between
   requests). Requests/s, p50/p99 per route, errors, and the CPU per request of the server's
   processes, of PostgreSQL's and of the load generator (bench/api_cpu.py; the load generator,
   bench/api_client.py, is one asyncio thread sharing the two cores with the server).
4. The reference: a bare Flask hello-world under the same gunicorn configuration, driven the same
   way: the ceiling of this machine, this server and this load generator for any Flask view.
5. The time from ``POST /api/v1/experiments`` (one small run) to that run finished, with the worker,
   and the reads while the worker simulates (skipped with ``--reads-only``).

Run:  .venv/bin/python bench/api.py [--postgres [URL]] [--seconds 10] [--clients 50] [--reads-only]
Loopback only; every loop is bounded by a deadline.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # benchmark this checkout
sys.path.insert(0, str(ROOT / "bench"))

from api_client import Connection, Stats, drive as drive_clients, free_port, percentile, post_and_wait, wait_health, write_token  # noqa: E402,E501
from api_cpu import CpuMeter  # noqa: E402
from api_store import busy, store_runs, tiny  # noqa: E402

TARGET_P99_MS = 50.0
TARGET_RPS = 1500.0
DEFAULT_POSTGRES = os.environ.get("VMEMLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


# --- the servers -------------------------------------------------------------------------------------

def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL") and not (k.startswith("VMEMLAB_") and k != "VMEMLAB_NUMBA_CACHE_DIR")}
    env.update(extra)
    return env


class Service:
    """A server process on a free loopback port, in its own process group."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path):
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def up(cls, data_dir: Path, port: int, workers: Optional[int], threads: int, log: Path,
           env: dict[str, str]) -> "Service":
        argv = [sys.executable, "-m", "service.cli", "up", "--port", str(port), "--threads", str(threads),
                "--concurrency", "2", "--exit-status"] + (["--workers", str(workers)] if workers else [])
        return cls(argv, _child_env({"VMEMLAB_DATA_DIR": str(data_dir), **env}), port, log)

    @classmethod
    def hello(cls, port: int, workers: Optional[int], threads: int, log: Path) -> "Service":
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-hello", str(port), "--api-threads",
                str(threads)] + (["--api-workers", str(workers)] if workers else [])
        return cls(argv, _child_env({}), port, log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def serve_hello(port: int, workers: Optional[int], threads: int) -> None:
    """A bare Flask app answering a small JSON object, under the service's gunicorn options."""
    from service.serving import default_web_workers, gunicorn_options, run_gunicorn

    def hello_app():
        from flask import Flask

        app = Flask("hello")
        app.add_url_rule("/hello", "hello", lambda: {"hello": "world", "id": 1})
        return app

    options = gunicorn_options("127.0.0.1", port, workers or default_web_workers(), threads, access_log=False)
    options.update(post_fork=None, child_exit=None, loglevel="warning")
    run_gunicorn(options, hello_app)


class ScratchPostgres:
    """A database of its own on a PostgreSQL server, dropped at the end."""

    def __init__(self, admin_url: str):
        from sqlalchemy.engine import make_url

        from service import db

        self.admin_url = db.normalize_url(admin_url)
        self.name = f"vmemlab_bench_api_{os.getpid()}"
        self.url = make_url(self.admin_url).set(database=self.name).render_as_string(hide_password=False)

    def _statement(self, statement: str) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()

    def create(self) -> None:
        self._statement(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._statement(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --- figures -------------------------------------------------------------------------------------------

SERVERS: dict[str, int] = {}        # url -> pid of the process whose tree serves it


def drive(url: str, *args: Any, **kwargs: Any) -> tuple[dict[str, Stats], float, float, Optional[dict[str, float]]]:
    """bench/api_client.drive, with the CPU the server and PostgreSQL used meanwhile."""
    meter = CpuMeter(SERVERS[url]) if url in SERVERS else None
    if meter is not None:
        meter.start()
    totals, wall, cpu = drive_clients(url, *args, **kwargs)
    return totals, wall, cpu, meter.stop() if meter is not None else None


def report(title: str, result: tuple[dict[str, Stats], float, float, Optional[dict[str, float]]],
           target: bool = True) -> dict[str, Any]:
    totals, wall, cpu, used = result
    print(f"== {title}  (the load generator used {cpu * 100:.0f}% of a core)")
    width = max(len(n) for n in totals)
    every: list[float] = []
    for name, stats in totals.items():
        n = len(stats.latencies)
        every += stats.latencies
        p50, p99 = percentile(stats.latencies, 50) * 1000, percentile(stats.latencies, 99) * 1000
        codes = " ".join(f"{k}:{v}" for k, v in sorted(stats.statuses.items()))
        print(f"  {name:<{width}}  {n / wall:7.1f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
              f"errors {stats.errors}   [{codes}]")
        if stats.first_error:
            print(f"  {'':<{width}}  first error: {stats.first_error}")
    rps = len(every) / wall
    p50, p99 = percentile(every, 50) * 1000, percentile(every, 99) * 1000
    verdict = ""
    if target:
        verdict = (f"   (target p99 < {TARGET_P99_MS:g} ms: {'met' if p99 < TARGET_P99_MS else 'NOT met'}; "
                   f">= {TARGET_RPS:,.0f} req/s: {'met' if rps >= TARGET_RPS else 'NOT met'})")
    print(f"  {'all':<{width}}  {rps:7.1f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   over {wall:.1f} s{verdict}")
    if used and every:
        print(f"  {'':<{width}}  CPU per request: server {used['server'] / len(every) * 1000:.2f} ms, "
              f"PostgreSQL {used['postgres'] / len(every) * 1000:.2f} ms, load generator "
              f"{cpu * wall / len(every) * 1000:.2f} ms")
    server_ms = used["server"] / len(every) * 1000 if used and every else None
    return {"title": title, "rps": rps, "p50": p50, "p99": p99, "cpu": cpu, "server_ms": server_ms,
            "errors": sum(s.errors for s in totals.values())}


def read_mix(experiments: list[int], runs: list[int]) -> dict[str, Callable[[random.Random], str]]:
    """The five reads, each picked with the same chance; ids at random among the stored ones."""
    return {
        "GET /runs/{id}": lambda rng: f"/api/v1/runs/{runs[rng.randrange(len(runs))]}",
        "GET /runs/{id}/series": lambda rng: f"/api/v1/runs/{runs[rng.randrange(len(runs))]}/series",
        "GET /experiments/{id}": lambda rng: f"/api/v1/experiments/{experiments[rng.randrange(len(experiments))]}",
        "GET /experiments/{id}/comparison":
            lambda rng: f"/api/v1/experiments/{experiments[rng.randrange(len(experiments))]}/comparison",
        "GET /runs?sort=-slowdown": lambda rng: "/api/v1/runs?sort=-slowdown",
    }


# --- the steps --------------------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running service on loopback (default: start `vmemlab up` here)")
    parser.add_argument("--database-url", help="with --url: its DATABASE_URL, to store the runs directly")
    parser.add_argument("--postgres", nargs="?", const=DEFAULT_POSTGRES, default=None, metavar="URL",
                        help=f"store the runs in a scratch database on this PostgreSQL server and serve from it, "
                             f"with Redis as the broker (default server {DEFAULT_POSTGRES})")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help=f"with --postgres (default {DEFAULT_REDIS})")
    parser.add_argument("--token", default=os.environ.get("VMEMLAB_TOKEN"),
                        help="with --url: a write token for the POST phases (default $VMEMLAB_TOKEN)")
    parser.add_argument("--runs", type=int, default=1000, help="runs to store (default 1000)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--list-clients", type=int, default=200,
                        help="concurrent clients on GET /runs?page_size=100 (default 200; 0 skips it)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per load phase (default 10)")
    parser.add_argument("--warm-up-s", type=float, default=20.0,
                        help="seconds of the read mix before the measured phases (default 20)")
    parser.add_argument("--think-ms", default="1000,250,100",
                        help="paced phases: mean wait of each client between requests, ms, comma-separated "
                             "(default 1000,250,100: 50, 200 and 500 requests/s offered by 50 clients; '' for none)")
    parser.add_argument("--api-workers", type=int, default=None, help="gunicorn workers (default: the service's)")
    parser.add_argument("--api-threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument("--reads-only", action="store_true", help="skip the phases that need the worker")
    parser.add_argument("--no-hello", action="store_true", help="skip the bare Flask reference")
    parser.add_argument("--serve-hello", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_hello:
        serve_hello(args.serve_hello, args.api_workers, args.api_threads)
        return 0
    args.seconds = min(max(args.seconds, 1.0), 600.0)
    args.clients = min(max(args.clients, 1), 500)
    thinks = [min(max(float(t), 1.0), 10_000.0) for t in str(args.think_ms).split(",") if t.strip()]

    random.seed(7)
    tmp = Path(tempfile.mkdtemp(prefix="vmemlab-bench-api-"))
    servers: list[Service] = []
    scratch: Optional[ScratchPostgres] = None
    print(f"cpu:          {os.cpu_count()} logical cores; the load generator and the server share them; "
          f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        runs: list[int] = []
        if args.url:
            url = args.url.rstrip("/")
            experiments: list[int] = []
            if args.database_url:
                experiments, runs, took = store_runs(args.database_url, args.runs, tmp)
                print(f"stored:       {args.runs:,} succeeded runs in {len(experiments)} experiments in {took:.1f} s")
            wait_health(url, 30)
            token = args.token or ""
        else:
            data_dir = tmp / "var"
            env: dict[str, str] = {}
            if args.postgres:
                scratch = ScratchPostgres(args.postgres)
                scratch.create()
                database_url = scratch.url
                env = {"DATABASE_URL": database_url, "REDIS_URL": args.redis_url}
                what = f"PostgreSQL (scratch database {scratch.name}) + Redis ({args.redis_url})"
            else:
                database_url = f"sqlite:///{data_dir / 'vmemlab.db'}"
                what = "embedded default: SQLite + SQLite broker"
            experiments, runs, took = store_runs(database_url, args.runs, data_dir)
            print(f"stored:       {args.runs:,} succeeded runs in {len(experiments)} experiments, inserted "
                  f"directly (summaries: real short seed runs, scaled) in {took:.1f} s")
            token = write_token(database_url)
            port = free_port()
            service = Service.up(data_dir, port, args.api_workers, args.api_threads, tmp / "service.log", env)
            servers.append(service)
            url = service.url
            SERVERS[url] = service.proc.pid
            t0 = time.perf_counter()
            wait_health(url, 180, alive=lambda: service.proc.poll() is None)
            print(f"service:      vmemlab up on {url} ({what}; API gunicorn, {args.api_workers or 'default'} "
                  f"workers x {args.api_threads} threads; Celery worker, 2 processes); answered after "
                  f"{time.perf_counter() - t0:.1f} s")

        conn = Connection(url)
        status, listing = conn.json("GET", "/api/v1/runs?sort=-slowdown&page_size=100")
        if status != 200:
            raise SystemExit(f"GET /api/v1/runs?sort=-slowdown: {status}: {str(listing)[:300]}")
        if not experiments:
            items = [r for r in listing if isinstance(r, dict)] if isinstance(listing, list) else []
            experiments = sorted({r["experiment_id"] for r in items if r.get("status") == "succeeded"})
            runs = sorted(r["id"] for r in items if r.get("status") == "succeeded")
            if not experiments:
                raise SystemExit("the service has no succeeded runs to read; pass --database-url to store some")
        conn.close()

        endpoints = read_mix(experiments, runs)
        # the first reads of each finished result in each API process build it (cold caches): shown
        # as a phase of its own, then the figures of a server that has served for a while
        rows = [report(f"warm-up: {args.clients} clients back to back, {args.warm_up_s:g} s (first reads build the "
                       f"processes' caches)", drive(url, endpoints, args.clients, args.warm_up_s), target=False)]
        rows += [report("1 client back to back (the cost of one request)", drive(url, endpoints, 1, min(args.seconds, 5.0)),
                       target=False)]
        rows.append(report(f"{args.clients} clients back to back, plain GETs, {args.seconds:g} s (saturation)",
                           drive(url, endpoints, args.clients, args.seconds)))
        rows.append(report(f"{args.clients} clients back to back, revalidating (If-None-Match), {args.seconds:g} s",
                           drive(url, endpoints, args.clients, args.seconds, revalidate=True)))
        if args.list_clients:
            page = {"GET /runs?page_size=100": lambda rng: "/api/v1/runs?page_size=100"}
            rows.append(report(f"{args.list_clients} clients back to back on GET /runs?page_size=100, {args.seconds:g} s",
                               drive(url, page, args.list_clients, args.seconds), target=False))
        for think in thinks:
            rows.append(report(f"{args.clients} clients, each ~{think:g} ms between requests "
                               f"(~{args.clients * 1000 / think:.0f} req/s offered), {args.seconds:g} s",
                               drive(url, endpoints, args.clients, args.seconds, think_ms=think)))
        if not args.no_hello:
            port = free_port()
            hello = Service.hello(port, args.api_workers, args.api_threads, tmp / "hello.log")
            servers.append(hello)
            SERVERS[hello.url] = hello.proc.pid
            wait_health(hello.url, 60, alive=lambda: hello.proc.poll() is None, path="/hello")
            ref = {"GET /hello (bare Flask)": lambda rng: "/hello"}
            drive(hello.url, ref, min(args.clients, 8), 1.0)
            rows.append(report(f"reference: bare Flask hello-world, same gunicorn options, {args.clients} clients back "
                               f"to back, {args.seconds:g} s", drive(hello.url, ref, args.clients, args.seconds),
                               target=False))
            hello.stop()

        if not args.reads_only:
            rows += write_phases(url, endpoints, token, args, thinks)

        print("== summary (all routes together)")
        for row in rows:
            print(f"  {row['rps']:7.1f} req/s  p50 {row['p50']:6.1f} ms  p99 {row['p99']:6.1f} ms  "
                  f"client CPU {row['cpu'] * 100:3.0f}%  server CPU/request "
                  f"{'   -   ' if row['server_ms'] is None else format(row['server_ms'], '.2f') + ' ms'}  "
                  f"errors {row['errors']}  {row['title']}")
        return 0
    finally:
        for server in servers:
            server.stop()
            if server.proc.returncode not in (0, None, -signal.SIGTERM):
                print(f"(a server exited with status {server.proc.returncode}; logs in {tmp})")
                args.keep = True
        if scratch is not None:
            scratch.drop()
        if args.keep:
            print(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def write_phases(url: str, endpoints: dict, token: str, args: argparse.Namespace, thinks: list[float]) -> list[dict]:
    print("== POST /api/v1/experiments -> run finished (one tiny run, 2 s simulated, warm worker)")
    post_and_wait(url, tiny(), token)                       # warm the worker's engine
    times = [post_and_wait(url, tiny(), token)[0] for _ in range(5)]
    print(f"  {', '.join(f'{t:.2f}' for t in times)} s   median {statistics.median(times):.2f} s")

    print("== while the worker simulates (two runs of a busy scenario)")
    result: dict[str, Any] = {}

    def simulate_busy() -> None:
        try:
            result["elapsed"], result["runs"] = post_and_wait(url, busy(40.0), token, timeout=300)
        except BaseException as exc:           # reported below
            result["error"] = exc

    sim = threading.Thread(target=simulate_busy, daemon=True)
    sim.start()
    time.sleep(2.0)                                         # let the runs start
    think = thinks[len(thinks) // 2] if thinks else 250.0
    row = report(f"{args.clients} clients, ~{think:g} ms apart, while 2 simulations run",
                 drive(url, endpoints, args.clients, args.seconds, think_ms=think))
    sim.join(timeout=300)
    if "error" in result:
        print(f"  the simulations failed: {result['error']}")
    else:
        states = ", ".join(f"{r.get('policy', r.get('policy_name'))} {r['status']}" for r in result["runs"])
        print(f"  the busy runs: {states}, {result['elapsed']:.1f} s from POST to finished")
    print(f"  the API answered while the workers simulated: {'yes' if row['errors'] == 0 else 'with errors'}")
    return [row]


if __name__ == "__main__":
    sys.exit(main())
