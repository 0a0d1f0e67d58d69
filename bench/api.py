"""API benchmark: prints figures, asserts nothing about speed.

1. Stores 1,000 finished runs with realistic summaries. They are inserted directly through
   service.experiments and the models (no simulation): the experiments are the seed scenario
   under the six built-in policies, each run's summary is a real summary of that policy (from a
   short simulation made once here) with its slowdowns and host figures scaled by a random factor,
   so that sorting has something to sort.
2. Starts the service on the embedded default (``vmemlab up``: gunicorn API + a Celery worker,
   SQLite and the SQLite broker in a temporary folder) on a free loopback port, or uses
   ``--url`` (then runs are inserted only with ``--database-url``, the service's DATABASE_URL).
3. Drives 50 concurrent clients (threads, one keep-alive http.client connection each) for N
   seconds against ``GET /api/v1/runs?sort=-slowdown`` and ``GET /api/v1/experiments/{id}/comparison``:
   one client alone (the cost of a request), back to back (saturation: by Little's law the mean
   latency there is clients / throughput), then paced (each client waits about ``--think-ms``
   between requests: a dashboard's polling, not a load generator's). Requests/s, p50/p99 latency
   and errors per endpoint, next to the target p99 < 50 ms.
4. The time from ``POST /api/v1/experiments`` (one small run) to that run finished, with the worker.
5. The same reads while the worker simulates (two busy runs), to show the API still answers.

Run:  .venv/bin/python bench/api.py [--seconds 10] [--clients 50] [--runs 1000] [--url URL --token T]
Loopback only; every loop is bounded by a deadline.
"""
from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # benchmark this checkout

TARGET_P99_MS = 50.0
SEED = ROOT / "scenarios" / "seed.json"
POLICIES = ("static", "overcommit", "esx", "dynamic-memory", "smart-paging", "kvm")


# --- the small scenarios posted to the service ---------------------------------------------------

def tiny(policies=("static",)) -> dict:
    """Two small VMs, 2 s simulated: a fraction of a second per run on a warm worker."""
    return {
        "name": "bench-tiny", "duration_s": 2.0, "epoch_s": 0.5, "seed": 3,
        "host": {"memory_mb": 512, "reserve_mb": 0, "vm_overhead_mb": 16, "swap_device": "ssd"},
        "vms": [
            {"name": "a", "memory_mb": 256, "os_mb": 32,
             "workload": {"phases": [{"kind": "uniform", "footprint_mb": 160, "duration_s": 2.0}]}},
            {"name": "b", "memory_mb": 256, "os_mb": 32,
             "workload": {"phases": [{"kind": "zipf", "footprint_mb": 200, "duration_s": 2.0}]}},
        ],
        "policies": [{"name": p, "params": {}} for p in policies],
    }


def busy(duration_s: float, policies=("static", "overcommit")) -> dict:
    """One VM with a large Zipf working set: a few seconds of wall time per run."""
    return {
        "name": "bench-busy", "duration_s": duration_s, "seed": 5,
        "host": {"memory_mb": 4096},
        "vms": [{"name": "db", "memory_mb": 2048, "os_mb": 64,
                 "workload": {"phases": [{"kind": "zipf", "footprint_mb": 1500, "zipf_s": 0.9,
                                          "duration_s": duration_s, "compute_ns": 200}]}}],
        "policies": [{"name": p, "params": {}} for p in policies],
    }


# --- storing runs directly -------------------------------------------------------------------------

def template_summaries(duration_s: float = 4.0) -> dict[str, tuple[dict, dict, list]]:
    """A real (summary, series, events) per built-in policy: the seed scenario, shortened."""
    from service.engine import simulate
    from service.policies import load_policy
    from service.scenario import load_scenario

    doc = json.loads(SEED.read_text())
    doc["duration_s"] = duration_s
    for vm in doc["vms"]:
        for phase in vm["workload"]["phases"]:
            phase["duration_s"] = min(phase.get("duration_s", duration_s), duration_s)
        vm["events"] = [e for e in vm.get("events", []) if e.get("time_s", 0) < duration_s]
    scenario, _ = load_scenario(doc, base_dir=ROOT / "scenarios")
    out = {}
    for name in POLICIES:
        result = simulate(scenario, load_policy(name).create({}))
        out[name] = (result.summary, result.series, result.events)
    return out


def _scaled(summary: dict, factor: float) -> dict:
    s = copy.deepcopy(summary)
    if isinstance(s.get("slowdown"), (int, float)):
        s["slowdown"] = 1.0 + (s["slowdown"] - 1.0) * factor + random.random() * 0.05
    for vm in s.get("vms", []):
        if isinstance(vm.get("slowdown"), (int, float)):
            vm["slowdown"] = 1.0 + (vm["slowdown"] - 1.0) * factor + random.random() * 0.05
    host = s.get("host") or {}
    for key in ("peak_used_mb", "mean_used_mb", "host_swap_peak_mb"):
        if isinstance(host.get(key), (int, float)):
            host[key] = host[key] * (0.8 + 0.4 * random.random())
    return s


def store_runs(database_url: str, count: int, data_dir: Path) -> tuple[list[int], float]:
    """Insert ``count`` succeeded runs (experiments of the seed under the six policies, the last
    one possibly with fewer); returns the experiment ids and the seconds it took."""
    from service import db
    from service.experiments import create_experiment
    from service.models import METRIC_COLUMNS, RunSeries, RunStatus, utcnow
    from service.settings import Settings, use_settings

    started = time.perf_counter()
    settings = Settings(data_dir=data_dir, database_url=database_url)
    use_settings(settings)
    db.upgrade(database_url)
    templates = template_summaries()
    base = json.loads(SEED.read_text())
    experiment_ids = []
    made = 0
    batch = 0
    session = db.session_factory(database_url)()
    try:
        while made < count:
            doc = copy.deepcopy(base)
            doc["name"] = f"bench-{len(experiment_ids):04d}"
            doc["seed"] = 1000 + len(experiment_ids)
            policies = POLICIES[: min(len(POLICIES), count - made)]
            doc["policies"] = [{"name": p, "params": {}} for p in policies]
            experiment = create_experiment(session, doc, settings=settings)
            factor = 0.5 + random.random() * 1.5
            now = utcnow()
            for run in experiment.runs:
                summary = _scaled(templates[run.policy_name][0], factor)
                run.status = RunStatus.SUCCEEDED.value
                run.progress = 1.0
                run.attempts = 1
                run.worker = "bench (inserted)"
                run.started_at = run.heartbeat_at = now
                run.finished_at = now
                run.summary = _finite(summary)
                for column, path in METRIC_COLUMNS.items():
                    value: Any = run.summary
                    for key in path:
                        value = value.get(key) if isinstance(value, dict) else None
                    setattr(run, column, value if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
            session.flush()
            for run in experiment.runs:
                _, series, events = templates[run.policy_name]
                session.add(RunSeries.pack(run.id, series, _finite(events)))
            experiment_ids.append(experiment.id)
            made += len(policies)
            batch += 1
            if batch % 20 == 0:
                session.commit()
        session.commit()
    finally:
        session.close()
        db.dispose_engines()
        use_settings(None)
    return experiment_ids, time.perf_counter() - started


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _finite(value.item())
    return value


# --- the service ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """``vmemlab up`` on a free loopback port, in its own process group."""

    def __init__(self, data_dir: Path, port: int, workers: Optional[int], threads: int, log: Path):
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "REDIS_URL") and not (k.startswith("VMEMLAB_") and k != "VMEMLAB_NUMBA_CACHE_DIR")}
        env["VMEMLAB_DATA_DIR"] = str(data_dir)
        argv = [sys.executable, "-m", "service.cli", "up", "--port", str(port), "--threads", str(threads),
                "--concurrency", "2", "--exit-status"]
        if workers:
            argv += ["--workers", str(workers)]
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


# --- HTTP ----------------------------------------------------------------------------------------------

class Connection:
    """One keep-alive connection; reconnects after an error."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"bench/api.py drives loopback servers only, not {parsed.hostname}")
        self.host, self.port, self.timeout = parsed.hostname, parsed.port or 80, timeout
        self.conn: Optional[http.client.HTTPConnection] = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        status, _, payload = self.exchange(method, path, body)
        return status, payload

    def exchange(self, method: str, path: str, body: Any = None,
                 headers: Optional[dict[str, str]] = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request with extra ``headers``: (status, response headers, body). bench/load.py
        uses it for tokens, If-Match and Idempotency-Key."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        all_headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        try:
            self.conn.request(method, path, body=data, headers=all_headers)
            response = self.conn.getresponse()
            payload = response.read()
            if response.will_close:
                self.close()
            return response.status, response.headers, payload
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, payload = self.request(method, path, body)
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode(errors="replace")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    first_error: str = ""

    def add(self, other: "Stats") -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        self.first_error = self.first_error or other.first_error


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def drive(url: str, endpoints: dict[str, Callable[[random.Random], str]], clients: int, seconds: float,
          think_ms: float = 0.0) -> tuple[dict[str, Stats], float]:
    """``clients`` threads, each with its own connection, request a random endpoint until the
    deadline, waiting ``think_ms`` between requests. Returns the stats per endpoint and the
    measured wall time."""
    names = list(endpoints)
    per_thread: list[dict[str, Stats]] = [{n: Stats() for n in names} for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i: int) -> None:
        rng = random.Random(i)
        conn = Connection(url)
        stats = per_thread[i]
        barrier.wait()
        if think_ms:         # independent clients: not all 50 at the same instant at the start
            time.sleep(rng.uniform(0, think_ms / 1000))
        while time.perf_counter() < deadline[0]:
            name = names[rng.randrange(len(names))]
            path = endpoints[name](rng)
            t0 = time.perf_counter()
            try:
                status, _ = conn.request("GET", path)
            except Exception as exc:   # a refused or broken connection counts as an error
                stats[name].errors += 1
                stats[name].first_error = stats[name].first_error or f"{type(exc).__name__}: {exc}"
                time.sleep(0.01)
                continue
            elapsed = time.perf_counter() - t0
            stats[name].statuses[status] = stats[name].statuses.get(status, 0) + 1
            if status == 200:
                stats[name].latencies.append(elapsed)
            else:
                stats[name].errors += 1
                stats[name].first_error = stats[name].first_error or f"HTTP {status} for {path}"
            if think_ms:
                time.sleep(rng.uniform(0.5, 1.5) * think_ms / 1000)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    cpu = time.process_time()
    start = time.perf_counter()
    deadline[0] = start + seconds
    barrier.wait()
    for t in threads:
        t.join(timeout=seconds + 60)
    wall = time.perf_counter() - start
    CLIENT_CPU.append((time.process_time() - cpu) / wall)
    totals = {n: Stats() for n in names}
    for stats in per_thread:
        for n in names:
            totals[n].add(stats[n])
    return totals, wall


CLIENT_CPU: list[float] = []     # per drive(): the client's own CPU time / wall time


def report(title: str, totals: dict[str, Stats], wall: float, target: bool = True) -> list[tuple[str, float]]:
    print(f"== {title}  (this client used {CLIENT_CPU[-1] * 100:.0f}% of a core)")
    p99s = []
    width = max(len(n) for n in totals)
    for name, stats in totals.items():
        n = len(stats.latencies)
        p50 = percentile(stats.latencies, 50) * 1000
        p99 = percentile(stats.latencies, 99) * 1000
        verdict = ""
        if target:
            verdict = f"   (target p99 < {TARGET_P99_MS:g} ms: {'met' if p99 < TARGET_P99_MS else 'NOT met'})"
        print(f"  {name:<{width}}  {n / wall:8.1f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   "
              f"errors {stats.errors}{verdict}")
        if stats.first_error:
            print(f"  {'':<{width}}  first error: {stats.first_error}")
        p99s.append((name, p99))
    total = sum(len(s.latencies) for s in totals.values())
    print(f"  {'all':<{width}}  {total / wall:8.1f} req/s over {wall:.1f} s")
    return p99s


# --- the steps --------------------------------------------------------------------------------------

def wait_health(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    conn = Connection(url, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise SystemExit("the service exited before it answered")
        try:
            status, _ = conn.request("GET", "/api/v1/health")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer /api/v1/health within {timeout:g} s")


def write_token(database_url: str) -> str:
    """A write token stored in the service's database, for the POST phases."""
    from service import auth, db

    with db.session_scope(database_url) as session:
        token = auth.create_token(session, "bench/api.py", auth.WRITE)
    db.dispose_engines()
    return token


def post_and_wait(url: str, doc: dict, token: str, timeout: float = 120.0) -> tuple[float, list[dict]]:
    """POST an experiment, poll its runs until finished; (seconds from POST to all finished, runs)."""
    conn = Connection(url)
    t0 = time.perf_counter()
    status, _, raw = conn.exchange("POST", "/api/v1/experiments", doc, {"Authorization": f"Bearer {token}"})
    try:
        experiment = json.loads(raw)
    except ValueError:
        experiment = raw.decode(errors="replace")
    if status != 201:
        raise SystemExit(f"POST /api/v1/experiments: {status}: {experiment}")
    ids = [r["id"] if isinstance(r, dict) else r for r in experiment["runs"]]
    final: dict[int, dict] = {}
    while len(final) < len(ids) and time.perf_counter() - t0 < timeout:
        for run_id in ids:
            if run_id not in final:
                status, run = conn.json("GET", f"/api/v1/runs/{run_id}")
                if status == 200 and run.get("status") in ("succeeded", "failed", "cancelled"):
                    final[run_id] = run
        if len(final) < len(ids):
            time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    conn.close()
    if len(final) < len(ids):
        raise SystemExit(f"runs {ids} not finished {timeout:g} s after the POST")
    return elapsed, [final[i] for i in ids]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running service on loopback (default: start `vmemlab up` here)")
    parser.add_argument("--database-url", help="with --url: its DATABASE_URL, to store the runs directly")
    parser.add_argument("--token", default=os.environ.get("VMEMLAB_TOKEN"),
                        help="with --url: a write token for the POST phases (default $VMEMLAB_TOKEN)"),
    parser.add_argument("--runs", type=int, default=1000, help="runs to store (default 1000)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per load phase (default 10)")
    parser.add_argument("--think-ms", default="1000,250,100",
                        help="paced phases: mean wait of each client between requests, ms, comma-separated "
                             "(default 1000,250,100: 50, 200 and 500 requests/s offered by 50 clients)")
    parser.add_argument("--api-workers", type=int, default=None, help="gunicorn workers of the started service")
    parser.add_argument("--api-threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument("--reads-only", action="store_true", help="skip the phases that need the worker")
    args = parser.parse_args(argv)
    args.seconds = min(max(args.seconds, 1.0), 600.0)
    args.clients = min(max(args.clients, 1), 500)
    thinks = [min(max(float(t), 1.0), 10_000.0) for t in str(args.think_ms).split(",") if t.strip()]

    random.seed(7)
    tmp = Path(tempfile.mkdtemp(prefix="vmemlab-bench-api-"))
    service: Optional[Service] = None
    print(f"cpu:          {os.cpu_count()} logical cores; client and server share them")
    try:
        if args.url:
            url = args.url.rstrip("/")
            if args.database_url:
                experiments, took = store_runs(args.database_url, args.runs, tmp)
                print(f"stored:       {args.runs:,} succeeded runs in {len(experiments)} experiments, "
                      f"inserted directly in {took:.1f} s")
            else:
                experiments = []
                print("stored:       nothing (no --database-url): reading what the service has")
            wait_health(url, 30)
            token = args.token or ""
        else:
            data_dir = tmp / "var"
            database_url = f"sqlite:///{data_dir / 'vmemlab.db'}"
            experiments, took = store_runs(database_url, args.runs, data_dir)
            print(f"stored:       {args.runs:,} succeeded runs in {len(experiments)} experiments, inserted "
                  f"directly (summaries: real short seed runs, scaled) in {took:.1f} s")
            token = write_token(database_url)
            port = free_port()
            service = Service(data_dir, port, args.api_workers, args.api_threads, tmp / "service.log")
            url = service.url
            t0 = time.perf_counter()
            wait_health(url, 180, alive=lambda: service.proc.poll() is None)
            print(f"service:      vmemlab up on {url} (embedded default: SQLite + SQLite broker; "
                  f"API gunicorn, {args.api_workers or 'default'} workers x {args.api_threads} threads; "
                  f"Celery worker, 2 processes); answered after {time.perf_counter() - t0:.1f} s")

        conn = Connection(url)
        status, listing = conn.json("GET", "/api/v1/runs?sort=-slowdown")
        if status != 200:
            raise SystemExit(f"GET /api/v1/runs?sort=-slowdown: {status}: {str(listing)[:300]}")
        if not experiments:
            items = listing.get("items", listing) if isinstance(listing, dict) else listing
            experiments = sorted({r["experiment_id"] for r in items if isinstance(r, dict) and "experiment_id" in r})
            if not experiments:
                raise SystemExit("the service has no runs to compare; pass --database-url to store some")
        status, body = conn.json("GET", f"/api/v1/experiments/{experiments[0]}/comparison")
        if status != 200:
            raise SystemExit(f"GET comparison: {status}: {str(body)[:300]}")
        conn.close()

        endpoints = {
            "GET /api/v1/runs?sort=-slowdown": lambda rng: "/api/v1/runs?sort=-slowdown",
            "GET /api/v1/experiments/{id}/comparison":
                lambda rng: f"/api/v1/experiments/{experiments[rng.randrange(len(experiments))]}/comparison",
        }
        drive(url, endpoints, min(args.clients, 8), 2.0)      # warm-up: connections, caches
        totals, wall = drive(url, endpoints, 1, min(args.seconds, 5.0))
        report("1 client back to back (the cost of one request)", totals, wall, target=False)
        totals, wall = drive(url, endpoints, args.clients, args.seconds)
        p99_back = report(f"{args.clients} clients back to back for {args.seconds:g} s (saturation)", totals, wall)
        p99_paced = {}
        for think in thinks:
            totals, wall = drive(url, endpoints, args.clients, args.seconds, think_ms=think)
            p99_paced[think] = report(f"{args.clients} clients, each ~{think:g} ms between requests "
                                      f"(~{args.clients * 1000 / think:.0f} req/s offered), for {args.seconds:g} s",
                                      totals, wall)

        if args.reads_only:
            return 0
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
        totals, wall = drive(url, endpoints, args.clients, args.seconds, think_ms=think)
        during = report(f"{args.clients} clients, ~{think:g} ms apart, while 2 simulations run", totals, wall)
        sim.join(timeout=300)
        if "error" in result:
            print(f"  the simulations failed: {result['error']}")
        else:
            states = ", ".join(f"{r.get('policy', r.get('policy_name'))} {r['status']}" for r in result["runs"])
            print(f"  the busy runs: {states}, {result['elapsed']:.1f} s from POST to finished")
        errors = sum(s.errors for s in totals.values())
        print(f"  the API answered while the workers simulated: {'yes' if errors == 0 else f'with {errors} errors'}")

        print("== targets")
        phases = [("back to back", p99_back)]
        phases += [(f"{think:g} ms apart", p99s) for think, p99s in p99_paced.items()]
        phases += [(f"{think:g} ms apart, simulating", during)]
        for label, p99s in phases:
            for name, p99 in p99s:
                print(f"p99 < {TARGET_P99_MS:g} ms, {args.clients} clients, {label:<26} {name:<42} "
                      f"{p99:7.1f} ms  {'met' if p99 < TARGET_P99_MS else 'NOT met'}")
        return 0
    finally:
        if service is not None:
            service.stop()
            if service.proc.returncode not in (0, None):
                print(f"(the service exited with status {service.proc.returncode}; log in {tmp / 'service.log'})")
                args.keep = True
        if args.keep:
            print(f"data kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
