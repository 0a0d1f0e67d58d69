"""Load test: concurrent reads and writes against the full stack while the workers simulate.
Prints figures per operation; exits 1 on any error or lost run.

1. Starts the full stack on loopback (or, with ``--url URL --token T``, drives a running service):
   a scratch PostgreSQL database (``vmemlab_load_<pid>``, migrated with ``vmemlab db upgrade``,
   dropped at the end), Redis (a database of its own, ``--redis-url``, default
   ``redis://127.0.0.1:6379/14``, flushed before and after), the API (``vmemlab serve``: gunicorn)
   on a free port and ``--workers`` Celery workers (``vmemlab worker --concurrency 1`` each), all
   with DATABASE_URL, REDIS_URL and VMEMLAB_DATA_DIR set (``--serve-migrates``: ``vmemlab serve``
   migrates itself, as docker-compose's api does). If ``vmemlab tokens`` exists, an admin token is
   created with it and sent on every request.
2. Warms up: waits until every worker answers the health endpoint's ping and one small
   experiment has run.
3. Drives ``--clients`` threads (one keep-alive http.client connection each, back to back unless
   ``--think-ms``) for ``--seconds`` through a mix of operations: reads (runs lists with filters
   and sorts, run polling, an experiment, comparisons, series, health, hosts) and writes (small
   experiments, a third with an Idempotency-Key, some replayed and some sent twice at once; hosts
   and VM templates created and patched with If-Match, some deliberately stale; cancellations).
   Experiments are posted at most ``--submit-rate`` per second and not while ``--max-backlog``
   runs are unfinished, so that the workers can keep up and the end is bounded. ``--clients
   4,16,32`` runs one phase per figure on the same stack.
4. Per operation and overall: count, throughput, p50/p99/max latency (of every answer), the
   expected 4xx (412 on a stale If-Match, 409 cancelling a finished run) and the errors: 5xx,
   unexpected 4xx, and connection errors (refused, reset, timeout).
5. Waits (``--drain-timeout``) for every run it created to finish, then checks them against
   what the API lists: each created run listed under its experiment and in a final state, none
   missing, none extra, none failed (the scenarios are valid), cancelled only where a
   cancellation was accepted (202), one experiment per Idempotency-Key; on its own stack also
   that the API lists no other run and that no worker stored a result twice (the workers' logs;
   the tracebacks and ERROR lines of every process's log are printed).

Run:  .venv/bin/python bench/load.py [--clients 16] [--seconds 30] [--workers 2]
      .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --token "$VMEMLAB_TOKEN"
Loopback only; every loop is bounded by a deadline; every process it starts is stopped at the
end (also on Ctrl-C or an error) and the scratch database dropped.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import importlib.util
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
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
sys.path.insert(0, str(ROOT))   # load-test this checkout

_spec = importlib.util.spec_from_file_location("bench_api", Path(__file__).resolve().parent / "api.py")
bench_api = importlib.util.module_from_spec(_spec)
sys.modules["bench_api"] = bench_api     # bench/api.py, for its helpers (dataclasses need the module)
_spec.loader.exec_module(bench_api)
Connection, free_port, percentile, tiny, busy = (bench_api.Connection, bench_api.free_port, bench_api.percentile,
                                                 bench_api.tiny, bench_api.busy)

API = "/api/v1"
FINAL = ("succeeded", "failed", "cancelled")
FAST_POLICIES = ("static", "overcommit", "dynamic-memory", "kvm", "esx")
DEFAULT_POSTGRES = os.environ.get("VMEMLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
HOST_SPEC = {"memory_mb": 512, "reserve_mb": 0, "vm_overhead_mb": 16, "swap_device": "ssd"}
TEMPLATE_SPEC = {"memory_mb": 256, "os_mb": 32, "replacement": "lru"}


# --- what the clients send --------------------------------------------------------------------------

def experiment_document(rng: random.Random, name: str, host_id: Optional[int] = None,
                        template_id: Optional[int] = None) -> dict:
    """A small experiment: mostly bench/api.py's tiny scenario (2 s simulated, a fraction of a
    second per run on a warm worker) under 1 to 3 policies; one in five a busy one-VM scenario
    (3 s simulated: 1 to 3 s of a worker); a third on a stored host and template when given."""
    if rng.random() < 0.2:
        doc = busy(3.0, policies=tuple(rng.sample(("static", "overcommit", "kvm"), rng.randint(1, 2))))
    else:
        doc = tiny(policies=tuple(rng.sample(FAST_POLICIES, rng.randint(1, 3))))
        if host_id is not None:
            del doc["host"]
            doc["host_id"] = host_id
        if template_id is not None:
            for vm in doc["vms"]:
                for key in TEMPLATE_SPEC:
                    vm.pop(key, None)
                vm["template_id"] = template_id
    doc["name"] = name
    doc["seed"] = rng.randrange(1, 2**31)
    return doc


RUN_LISTS = (
    "/runs?sort=-slowdown",
    "/runs?status=succeeded&sort=-slowdown&page_size=20",
    "/runs?policy=static&sort=-created_at",
    "/runs?status=queued",
    "/runs?status=running&sort=-created_at",
    "/runs?sort=-finished_at&page=2&page_size=5",
    "/runs?policy=kvm&status=succeeded&sort=fairness",
)


# --- statistics -----------------------------------------------------------------------------------------

@dataclass
class OpStats:
    latencies: list[float] = field(default_factory=list)      # every answer, whatever its status
    statuses: collections.Counter = field(default_factory=collections.Counter)
    expected_4xx: int = 0
    expected_statuses: collections.Counter = field(default_factory=collections.Counter)
    server_5xx: int = 0
    unexpected_4xx: int = 0
    connection: int = 0
    examples: list[str] = field(default_factory=list)          # the first unexpected answers

    @property
    def errors(self) -> int:
        return self.server_5xx + self.unexpected_4xx + self.connection

    def add(self, other: "OpStats") -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.expected_4xx += other.expected_4xx
        self.expected_statuses.update(other.expected_statuses)
        self.server_5xx += other.server_5xx
        self.unexpected_4xx += other.unexpected_4xx
        self.connection += other.connection
        self.examples += other.examples[: max(0, 3 - len(self.examples))]


class Recorder:
    """One client's statistics per operation (no lock: merged after the phase)."""

    def __init__(self) -> None:
        self.ops: dict[str, OpStats] = collections.defaultdict(OpStats)

    def answer(self, op: str, method: str, path: str, status: int, elapsed: float, payload: bytes,
               ok: tuple[int, ...], expected: tuple[int, ...] = ()) -> str:
        """Count an answer; returns ``ok``, ``expected`` or ``error``."""
        stats = self.ops[op]
        stats.latencies.append(elapsed)
        stats.statuses[status] += 1
        if status in ok:
            return "ok"
        if status in expected:
            stats.expected_4xx += 1
            stats.expected_statuses[status] += 1
            return "expected"
        if status >= 500:
            stats.server_5xx += 1
        else:
            stats.unexpected_4xx += 1
        self.example(op, f"{method} {path} -> {status} {payload[:300].decode(errors='replace').strip()}")
        return "error"

    def failure(self, op: str, method: str, path: str, exc: BaseException) -> None:
        self.ops[op].connection += 1
        self.example(op, f"{method} {path} -> {type(exc).__name__}: {exc}")

    def wrong(self, op: str, text: str) -> None:
        """A 2xx whose content is wrong (a replay answered with another experiment...)."""
        self.ops[op].unexpected_4xx += 1
        self.example(op, text)

    def example(self, op: str, text: str) -> None:
        if len(self.ops[op].examples) < 3:
            self.ops[op].examples.append(f"{time.strftime('%H:%M:%S')} {text}")


# --- what the clients know -----------------------------------------------------------------------------

@dataclass
class Created:
    id: int
    name: str
    runs: list[int]
    key: Optional[str] = None
    document: Optional[dict] = None


class World:
    """What every client has created and seen, shared under a lock; and the submission gate."""

    def __init__(self, submit_rate: float, max_backlog: int):
        self.lock = threading.Lock()
        self.experiments: dict[int, Created] = {}
        self.status: dict[int, str] = {}              # run id -> last status seen
        self.cancel_accepted: set[int] = set()        # runs whose cancellation answered 202
        self.unknown_posts: list[str] = []            # POSTs with no answer: created or not?
        self.keyed: list[Created] = []
        self.names = itertools.count(1)               # next() is atomic in CPython
        self.submit_rate, self.max_backlog = submit_rate, max_backlog
        self.tokens = 1.0
        self.refilled = time.monotonic()

    def may_submit(self) -> bool:
        """At most ``submit_rate`` experiments per second (bursts of 2), none while
        ``max_backlog`` runs created here are unfinished."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(2.0, self.tokens + (now - self.refilled) * self.submit_rate)
            self.refilled = now
            if self.tokens < 1.0 or self.backlog() >= self.max_backlog:
                return False
            self.tokens -= 1.0
            return True

    def backlog(self) -> int:
        return sum(1 for s in self.status.values() if s not in FINAL)

    def add_experiment(self, created: Created) -> None:
        with self.lock:
            if created.id not in self.experiments:
                self.experiments[created.id] = created
                for run_id in created.runs:
                    self.status.setdefault(run_id, "queued")
                if created.key:
                    self.keyed.append(created)

    def seen(self, run: Any) -> None:
        if isinstance(run, dict) and isinstance(run.get("id"), int) and isinstance(run.get("status"), str):
            with self.lock:
                if run["id"] in self.status and self.status[run["id"]] not in FINAL:   # final is final:
                    self.status[run["id"]] = run["status"]                              # no older answer undoes it

    def pick_run(self, rng: random.Random, unfinished_first: bool = True, status: Optional[str] = None) -> Optional[int]:
        with self.lock:
            runs = list(self.status.items())
        if status:
            runs = [r for r in runs if r[1] == status]
        elif unfinished_first:
            pending = [r for r in runs if r[1] not in FINAL]
            runs = pending or runs
        return rng.choice(runs)[0] if runs else None

    def pick_experiment(self, rng: random.Random) -> Optional[int]:
        with self.lock:
            ids = list(self.experiments)
        return rng.choice(ids) if ids else None

    def pick_keyed(self, rng: random.Random) -> Optional[Created]:
        with self.lock:
            return rng.choice(self.keyed) if self.keyed else None


@dataclass
class Owned:
    """A host or VM template a client created: only that client changes it, so it knows its ETag."""
    path: str
    etag: str
    old_etags: list[str] = field(default_factory=list)
    version: int = 1


class Client:
    """One simulated user: a keep-alive connection, a random generator, its own hosts and templates."""

    def __init__(self, index: int, url: str, token: Optional[str], world: World, tag: str, timeout: float,
                 seed: int):
        self.index, self.world, self.tag = index, world, tag
        self.rng = random.Random(seed * 1000 + index)
        self.conn = Connection(url, timeout=timeout)
        self.url, self.timeout = url, timeout
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.rec = Recorder()
        self.hosts: list[Owned] = []
        self.templates: list[Owned] = []

    # plumbing -------------------------------------------------------------------------------

    def call(self, op: str, method: str, path: str, body: Any = None, headers: Optional[dict] = None,
             ok: tuple[int, ...] = (200,), expected: tuple[int, ...] = (),
             conn: Optional[Any] = None) -> tuple[str, Optional[int], Any, Any]:
        """One request, counted under ``op``: (outcome, status, decoded JSON body, headers);
        outcome ``ok``, ``expected``, ``error`` or ``failed`` (no answer)."""
        conn = conn or self.conn
        full = API + path
        t0 = time.perf_counter()
        try:
            status, response_headers, payload = conn.exchange(method, full, body, {**self.auth, **(headers or {})})
        except Exception as exc:            # refused, reset, timed out: a connection error
            self.rec.failure(op, method, full, exc)
            time.sleep(0.01)
            return "failed", None, None, None
        elapsed = time.perf_counter() - t0
        outcome = self.rec.answer(op, method, full, status, elapsed, payload, ok, expected)
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            data = None
        return outcome, status, data, response_headers

    def name(self, what: str) -> str:
        """Unique over the whole run (every phase): one name, one experiment, host or template."""
        return f"load-{self.tag}-{what}-{next(self.world.names)}"

    # reads ---------------------------------------------------------------------------------

    def runs_list(self) -> None:
        path = self.rng.choice(RUN_LISTS)
        if self.rng.random() < 0.3:
            experiment = self.world.pick_experiment(self.rng)
            if experiment is not None:
                path = f"/runs?experiment_id={experiment}&sort=id"
        _, _, data, _ = self.call("GET /runs (filters, sort)", "GET", path)
        if isinstance(data, list):
            for run in data:
                self.world.seen(run)

    def run_get(self) -> None:
        run_id = self.world.pick_run(self.rng)
        if run_id is None:
            return self.runs_list()
        _, _, data, _ = self.call("GET /runs/{id} (polling)", "GET", f"/runs/{run_id}")
        self.world.seen(data)

    def experiment_get(self) -> None:
        experiment = self.world.pick_experiment(self.rng)
        if experiment is None:
            return self.runs_list()
        if self.rng.random() < 0.3:
            _, _, data, _ = self.call("GET /experiments (list)", "GET", "/experiments?page_size=10")
            return
        _, _, data, _ = self.call("GET /experiments/{id}", "GET", f"/experiments/{experiment}")
        if isinstance(data, dict):
            for run in data.get("runs") or []:
                self.world.seen(run)

    def comparison(self) -> None:
        experiment = self.world.pick_experiment(self.rng)
        if experiment is None:
            return self.runs_list()
        self.call("GET /experiments/{id}/comparison", "GET", f"/experiments/{experiment}/comparison")

    def comparisons(self) -> None:
        runs = {self.world.pick_run(self.rng, unfinished_first=False) for _ in range(self.rng.randint(2, 5))}
        runs.discard(None)
        if not runs:
            return self.runs_list()
        self.call("GET /comparisons?runs=...", "GET", f"/comparisons?runs={','.join(map(str, sorted(runs)))}")

    def series(self) -> None:
        run_id = self.world.pick_run(self.rng, status="succeeded")
        if run_id is None:
            return self.run_get()
        fmt = "csv" if self.rng.random() < 0.2 else "json"
        self.call("GET /runs/{id}/series", "GET", f"/runs/{run_id}/series?format={fmt}")

    def health(self) -> None:
        self.call("GET /health", "GET", "/health")

    def hosts_list(self) -> None:
        path = self.rng.choice(("/hosts?name_contains=load", "/vm-templates?page_size=20", "/hosts?page=2"))
        self.call("GET /hosts, /vm-templates (list)", "GET", path)

    # writes --------------------------------------------------------------------------------

    def post_experiment(self) -> None:
        if not self.world.may_submit():
            return self.run_get()
        host = self.rng.choice(self.hosts) if self.hosts and self.rng.random() < 0.3 else None
        template = self.rng.choice(self.templates) if self.templates and self.rng.random() < 0.3 else None
        doc = experiment_document(self.rng, self.name("exp"), host_id=_id_of(host), template_id=_id_of(template))
        key = f"{self.tag}-{secrets.token_hex(8)}" if self.rng.random() < 1 / 3 else None
        outcome, status, data, _ = self.call("POST /experiments", "POST", "/experiments", doc,
                                             {"Idempotency-Key": key} if key else None, ok=(201,))
        self._created(outcome, data, doc, key, "POST /experiments")

    def _created(self, outcome: str, data: Any, doc: dict, key: Optional[str], op: str) -> Optional[int]:
        if outcome == "failed":
            with self.world.lock:
                self.world.unknown_posts.append(doc["name"])
            return None
        if outcome != "ok" or not isinstance(data, dict):
            return None
        runs = [int(r["id"] if isinstance(r, dict) else r) for r in data.get("runs") or []]
        if len(runs) != len(doc["policies"]):
            self.rec.wrong(op, f"experiment {data.get('id')}: {len(runs)} runs for {len(doc['policies'])} policies")
        self.world.add_experiment(Created(int(data["id"]), doc["name"], runs, key, doc))
        return int(data["id"])

    def replay_experiment(self) -> None:
        """The same Idempotency-Key and body again: 200 and the same experiment."""
        earlier = self.world.pick_keyed(self.rng)
        if earlier is None:
            return self.post_experiment()
        outcome, _, data, _ = self.call("POST /experiments (replayed key)", "POST", "/experiments",
                                        earlier.document, {"Idempotency-Key": earlier.key}, ok=(200,))
        if outcome == "ok" and (not isinstance(data, dict) or data.get("id") != earlier.id):
            self.rec.wrong("POST /experiments (replayed key)",
                           f"key {earlier.key}: replay answered experiment {data.get('id') if isinstance(data, dict) else data}, "
                           f"not {earlier.id}")

    def duplicate_experiment(self) -> None:
        """The same new key and body on two connections at once: one 201 and one 200 (or two 200
        after a 201 elsewhere), the same experiment."""
        if not self.world.may_submit():
            return self.run_get()
        op = "POST /experiments (same key x2 at once)"
        doc = experiment_document(self.rng, self.name("dup"))
        key = f"{self.tag}-dup-{secrets.token_hex(8)}"
        other = Connection(self.url, timeout=self.timeout)
        results: list[Any] = [None, None]
        gate = threading.Barrier(2, timeout=self.timeout)

        def send(slot: int, conn: Any) -> None:
            try:
                gate.wait()
            except threading.BrokenBarrierError:
                pass
            results[slot] = self.call(op, "POST", "/experiments", doc, {"Idempotency-Key": key}, ok=(200, 201),
                                      conn=conn)

        helper = threading.Thread(target=send, args=(1, other), daemon=True)
        helper.start()
        send(0, self.conn)
        helper.join(timeout=self.timeout + 5)
        other.close()
        answers = [r for r in results if r is not None and r[0] == "ok"]
        ids = {r[2].get("id") for r in answers if isinstance(r[2], dict)}
        statuses = sorted(r[1] for r in answers)
        if len(ids) > 1 or statuses.count(201) > 1:
            self.rec.wrong(op, f"key {key}: answers {statuses} with experiments {sorted(ids)}: a duplicate")
        created = [r for r in answers if r[1] == 201] or answers
        if created:
            self._created("ok", created[0][2], doc, key, op)
        elif any(r is None or r[0] == "failed" for r in results):
            with self.world.lock:
                self.world.unknown_posts.append(doc["name"])

    def post_item(self, kind: str) -> None:
        spec = HOST_SPEC if kind == "hosts" else TEMPLATE_SPEC
        outcome, status, data, headers = self.call(f"POST /{kind}", "POST", f"/{kind}",
                                                   {"name": self.name(kind[:4]), "spec": spec}, ok=(201,))
        if outcome == "ok" and isinstance(data, dict) and headers is not None and headers.get("ETag"):
            (self.hosts if kind == "hosts" else self.templates).append(
                Owned(f"/{kind}/{data['id']}", headers["ETag"]))

    def patch_item(self, kind: str, stale: bool = False) -> None:
        owned = self.hosts if kind == "hosts" else self.templates
        if not owned:
            return self.post_item(kind)
        item = self.rng.choice(owned)
        body: dict[str, Any] = {"description": f"patched by client {self.index} at {time.time():.3f}"}
        if kind == "hosts" and self.rng.random() < 0.5:
            body["spec"] = {**HOST_SPEC, "memory_mb": self.rng.choice((512, 768, 1024))}
        if stale and item.old_etags:
            self.call(f"PATCH /{kind}/{{id}} (stale If-Match)", "PATCH", item.path, body,
                      {"If-Match": self.rng.choice(item.old_etags)}, ok=(), expected=(412,))
            return
        outcome, _, data, headers = self.call(f"PATCH /{kind}/{{id}} (If-Match)", "PATCH", item.path, body,
                                              {"If-Match": item.etag})
        if outcome == "ok" and headers is not None and headers.get("ETag"):
            item.old_etags.append(item.etag)
            item.etag = headers["ETag"]
            if isinstance(data, dict) and data.get("version") != item.version + 1:
                self.rec.wrong(f"PATCH /{kind}/{{id}} (If-Match)",
                               f"{item.path}: version {data.get('version')} after {item.version}")
            item.version += 1

    def cancel(self) -> None:
        run_id = self.world.pick_run(self.rng)
        if run_id is None:
            return self.runs_list()
        outcome, status, data, _ = self.call("POST /runs/{id}/cancel", "POST", f"/runs/{run_id}/cancel",
                                             ok=(202,), expected=(409,))
        if outcome == "ok":
            with self.world.lock:
                self.world.cancel_accepted.add(run_id)
            self.world.seen(data)

    # the mix ---------------------------------------------------------------------------------

    def operations(self) -> list[tuple[Callable[[], None], float]]:
        return [
            (self.runs_list, 20), (self.run_get, 22), (self.experiment_get, 6), (self.comparison, 9),
            (self.comparisons, 4), (self.series, 5), (self.hosts_list, 3), (self.health, 0.3),
            (self.post_experiment, 9), (self.replay_experiment, 2), (self.duplicate_experiment, 1),
            (lambda: self.post_item("hosts"), 3), (lambda: self.post_item("vm-templates"), 2),
            (lambda: self.patch_item("hosts"), 5), (lambda: self.patch_item("vm-templates"), 3),
            (lambda: self.patch_item("hosts", stale=True), 1), (self.cancel, 0.15),
        ]

    def loop(self, deadline: float, stop: threading.Event, think_ms: float) -> None:
        ops = self.operations()
        actions, weights = [o[0] for o in ops], [o[1] for o in ops]
        if think_ms:
            time.sleep(self.rng.uniform(0, think_ms / 1000))
        while not stop.is_set() and time.perf_counter() < deadline:
            self.rng.choices(actions, weights)[0]()
            if think_ms:
                time.sleep(self.rng.uniform(0.5, 1.5) * think_ms / 1000)
        self.conn.close()


def _id_of(item: Optional[Owned]) -> Optional[int]:
    return int(item.path.rsplit("/", 1)[1]) if item is not None else None


CLIENT_CPU: list[float] = []


def phase(url: str, token: Optional[str], world: World, tag: str, clients: int, seconds: float,
          think_ms: float, timeout: float, stop: threading.Event, seed: int) -> tuple[dict[str, OpStats], float]:
    """``clients`` threads through the mix for ``seconds``; the statistics per operation and the wall time."""
    users = [Client(i, url, token, world, tag, timeout, seed) for i in range(clients)]
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    threads = [threading.Thread(target=u.loop, args=(deadline, stop, think_ms), daemon=True) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.perf_counter()) + timeout + 30)
    wall = time.perf_counter() - start
    CLIENT_CPU.append((time.process_time() - cpu) / wall)
    totals: dict[str, OpStats] = collections.defaultdict(OpStats)
    for u in users:
        for op, stats in u.rec.ops.items():
            totals[op].add(stats)
    return dict(sorted(totals.items(), key=lambda kv: (not kv[0].startswith("GET"), kv[0]))), wall


def report(title: str, totals: dict[str, OpStats], wall: float) -> OpStats:
    print(f"== {title}  (the load client used {CLIENT_CPU[-1] * 100:.0f}% of a core)")
    width = max([len(n) for n in totals] + [30])
    print(f"  {'operation':<{width}} {'count':>7} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f"  {'exp.4xx':>7} {'5xx':>5} {'4xx!':>5} {'conn':>5}")
    everything = OpStats()
    legend = ("  (latency of every answer; exp.4xx: expected refusals, 412 for a stale If-Match and 409 for "
              "cancelling a finished run; errors: 5xx, 4xx! = any other 4xx or a wrong answer, conn = refused, "
              "reset or timed out)")

    def row(name: str, s: OpStats) -> None:
        n = len(s.latencies) + s.connection
        lat = [x * 1000 for x in s.latencies]
        print(f"  {name:<{width}} {n:>7} {n / wall:>7.1f} {percentile(lat, 50):>8.1f} {percentile(lat, 99):>8.1f} "
              f"{max(lat) if lat else float('nan'):>8.1f}  {s.expected_4xx:>7} {s.server_5xx:>5} "
              f"{s.unexpected_4xx:>5} {s.connection:>5}")

    for name, stats in totals.items():
        row(name, stats)
        everything.add(stats)
    row("all", everything)
    reads = OpStats()
    writes = OpStats()
    for name, stats in totals.items():
        (reads if name.startswith("GET") else writes).add(stats)
    row("  reads", reads)
    row("  writes", writes)
    print(legend)
    expected = collections.Counter()
    for name, stats in totals.items():
        for status, count in stats.expected_statuses.items():
            expected[(name, status)] += count
    if expected:
        print("  expected 4xx: " + ", ".join(f"{op}: {count} x {status}" for (op, status), count in expected.items()))
    for name, stats in totals.items():
        for text in stats.examples:
            print(f"  ERROR {name}: {text}")
    return everything


# --- the stack ------------------------------------------------------------------------------------------

def _parent_death_signal() -> None:
    """In the child before exec: SIGTERM when this script dies, so that nothing is left behind."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)        # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Process:
    """A child in its own session (a terminal's Ctrl-C reaches this script alone), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        self.name, self.log_path = name, log
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_parent_death_signal if sys.platform.startswith("linux") else None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> Optional[int]:
        """Wait for a graceful exit, then SIGKILL whatever is left of its process group."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} (pid {self.proc.pid}) did not stop within {timeout:g} s: SIGKILL")
        try:       # the group outlives its leader only through our own orphans (celery pool children)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        return self.proc.returncode


class Stack:
    """A scratch PostgreSQL database, a Redis database, the API and the Celery workers."""

    def __init__(self, args: argparse.Namespace, tmp: Path):
        from sqlalchemy.engine import make_url

        self.args, self.tmp = args, tmp
        self.db_name = f"vmemlab_load_{os.getpid()}"
        self.admin_url = args.postgres_url
        self.database_url = make_url(args.postgres_url).set(database=self.db_name).render_as_string(hide_password=False)
        self.redis_url = args.redis_url
        self.processes: list[Process] = []
        self.created_db = False
        self.flushed_redis = False
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("DATABASE_URL", "REDIS_URL")
                    and not (k.startswith("VMEMLAB_") and k != "VMEMLAB_NUMBA_CACHE_DIR")}
        self.env.update(DATABASE_URL=self.database_url, REDIS_URL=self.redis_url,
                        VMEMLAB_DATA_DIR=str(tmp / "var"), PYTHONUNBUFFERED="1")
        for assignment in args.env or []:
            name, _, value = assignment.partition("=")
            self.env[name] = value
        self.me = [sys.executable, "-m", "service.cli"]

    # databases -------------------------------------------------------------------------------

    def _admin(self):
        from sqlalchemy import create_engine

        from service import db

        return create_engine(db.normalize_url(self.admin_url), isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 5})

    def _admin_statement(self, statement: str) -> None:
        from sqlalchemy import text

        engine = self._admin()
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()

    def create_database(self) -> None:
        self._admin_statement(f'CREATE DATABASE "{self.db_name}"')
        self.created_db = True

    def drop_database(self) -> None:
        if self.created_db:
            self._admin_statement(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self.created_db = False

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.flushdb()           # this database only (the URL's number)
            self.flushed_redis = True
        finally:
            client.close()

    # processes -------------------------------------------------------------------------------

    def run(self, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run(self.me + list(argv), cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        done = self.run("db", "upgrade")
        if done.returncode != 0:
            raise SystemExit(f"vmemlab db upgrade failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        print(f"database:     {done.stdout.strip()}")
        serve = ["serve", "--port", str(self.port), "--loglevel", "warning", "--threads", str(self.args.api_threads)]
        if not self.args.serve_migrates:
            serve.append("--no-upgrade")
        if self.args.api_workers:
            serve += ["--workers", str(self.args.api_workers)]
        self.api = Process("api", self.me + serve, self.env, self.tmp / "api.log")
        self.processes.append(self.api)
        self.workers = []
        for i in range(self.args.workers):
            worker = Process(f"worker {i + 1}", self.me + [
                "worker", "--concurrency", str(self.args.worker_concurrency), "--hostname", f"load{i + 1}@%h",
                "--loglevel", "info", "--quiet"], self.env, self.tmp / f"worker{i + 1}.log")
            self.processes.append(worker)
            self.workers.append(worker)

    def alive(self) -> bool:
        return all(p.alive() for p in self.processes)

    def stop(self) -> None:
        for p in self.processes:       # all at once: the workers finish what they run (warm shutdown)
            p.terminate()
        for p in self.processes:
            code = p.wait(timeout=60)
            if code not in (0, None, -signal.SIGTERM):
                print(f"  {p.name} exited with status {code} (log {p.log_path})")

    def token(self) -> Optional[str]:
        """An admin token from ``vmemlab tokens create``, if this checkout has the command."""
        probe = self.run("tokens", "--help", timeout=60)
        if probe.returncode != 0:
            return None
        made = self.run("tokens", "create", "--name", f"load-{os.getpid()}", "--role", "admin", timeout=60)
        lines = made.stdout.strip().splitlines()
        if made.returncode != 0 or len(lines) != 1:
            raise SystemExit(f"vmemlab tokens create failed ({made.returncode}): {made.stdout.strip()[:300]} "
                             f"{made.stderr.strip()[-1000:]}")
        return lines[0].strip()

    def log_findings(self) -> dict[str, Any]:
        """What the processes logged: tracebacks and errors, and each run's results stored
        (``run N: succeeded``) and attempts, over every worker log."""
        findings: dict[str, Any] = {"tracebacks": [], "errors": [], "succeeded": collections.Counter(),
                                    "attempts": collections.Counter(), "skipped": collections.Counter()}
        for p in self.processes:
            try:
                text = p.log_path.read_text(errors="replace")
            except OSError:
                continue
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if line.startswith("Traceback"):
                    findings["tracebacks"].append((p.name, "\n".join(lines[max(0, i - 2): i + 30])))
                elif re.search(r"\b(ERROR|CRITICAL)\b", line):
                    findings["errors"].append((p.name, line[:400]))
                m = re.search(r"run (\d+): (succeeded|attempt \d+|not claimed)", line)
                if m:
                    kind = {"s": "succeeded", "a": "attempts", "n": "skipped"}[m.group(2)[0]]
                    findings[kind][int(m.group(1))] += 1
        return findings


# --- waiting and checking -----------------------------------------------------------------------------

def get_json(conn: Any, path: str, auth: dict) -> tuple[Optional[int], Any, Any]:
    try:
        status, headers, payload = conn.exchange("GET", API + path, None, auth)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}", None
    try:
        return status, json.loads(payload) if payload else None, headers
    except ValueError:
        return status, payload[:300].decode(errors="replace"), headers


def list_all(conn: Any, path: str, auth: dict, deadline: float) -> Optional[list]:
    """Every item of a paginated list (page_size 100), or None if a page failed."""
    items: list = []
    page = 1
    sep = "&" if "?" in path else "?"
    while time.monotonic() < deadline:
        status, data, headers = get_json(conn, f"{path}{sep}page_size=100&page={page}", auth)
        if status != 200 or not isinstance(data, list):
            return None
        items += data
        pagination = json.loads(headers.get("X-Pagination") or "{}") if headers is not None else {}
        if not data or page >= int(pagination.get("total_pages") or 1):
            return items
        page += 1
    return None


def wait_health(url: str, auth: dict, timeout: float, workers: int, alive: Callable[[], bool]) -> dict:
    """Until the health endpoint answers 200 and (if ``workers``) that many workers answer its ping."""
    conn = Connection(url, timeout=5)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if not alive():
            raise SystemExit("a process of the stack exited while it started")
        status, data, _ = get_json(conn, "/health", auth)
        last = (status, data)
        if status == 200 and isinstance(data, dict):
            seen = (data.get("workers") or {}).get("workers") or []
            if len(seen) >= workers:
                conn.close()
                return data
        time.sleep(0.5)
    conn.close()
    raise SystemExit(f"{url}: not healthy with {workers} workers within {timeout:g} s; last answer {last}")


def drain(url: str, auth: dict, world: World, timeout: float) -> tuple[float, int]:
    """Poll every experiment with unfinished runs until all are final or the time is up;
    (seconds waited, runs still unfinished)."""
    conn = Connection(url, timeout=30)
    start = time.monotonic()
    deadline = start + timeout
    shown = start
    while True:
        with world.lock:
            pending_experiments = sorted({e.id for e in world.experiments.values()
                                          for r in e.runs if world.status.get(r) not in FINAL})
        if not pending_experiments or time.monotonic() >= deadline:
            break
        for experiment in pending_experiments:
            if time.monotonic() >= deadline:
                break
            status, data, _ = get_json(conn, f"/experiments/{experiment}", auth)
            if status == 200 and isinstance(data, dict):
                for run in data.get("runs") or []:
                    world.seen(run)
        if time.monotonic() - shown >= 10:
            shown = time.monotonic()
            print(f"  ... {world.backlog()} runs unfinished after {shown - start:.0f} s")
        time.sleep(0.5)
    conn.close()
    return time.monotonic() - start, world.backlog()


def verify(url: str, auth: dict, world: World, own_stack: bool, timeout: float = 300.0) -> list[str]:
    """Compare what the API lists with what was created; the problems found (empty: none)."""
    conn = Connection(url, timeout=30)
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    counts = collections.Counter()
    attempts_over_1 = []
    cancelled_ok = succeeded_despite_cancel = 0
    listed_total = 0
    for created in sorted(world.experiments.values(), key=lambda e: e.id):
        listed = list_all(conn, f"/runs?experiment_id={created.id}&sort=id", auth, deadline)
        if listed is None:
            problems.append(f"experiment {created.id}: its runs could not be listed")
            continue
        listed_total += len(listed)
        by_id = {r["id"]: r for r in listed}
        for run_id in created.runs:
            run = by_id.get(run_id)
            if run is None:
                problems.append(f"experiment {created.id}: run {run_id} was created but is not listed (lost)")
                counts["lost"] += 1
                continue
            status = run.get("status")
            counts[status] += 1
            if status not in FINAL:
                problems.append(f"run {run_id}: still {status} (progress {run.get('progress')}) after the drain")
            elif status == "failed":
                problems.append(f"run {run_id} ({run.get('policy_name')}) failed: {run.get('error')}")
            elif status == "cancelled" and run_id not in world.cancel_accepted:
                problems.append(f"run {run_id}: cancelled, but no cancellation was asked for")
            elif status == "cancelled":
                cancelled_ok += 1
            elif status == "succeeded" and run_id in world.cancel_accepted:
                succeeded_despite_cancel += 1
            if (run.get("attempts") or 0) > 1:
                attempts_over_1.append(f"{run_id} ({run.get('attempts')} attempts)")
        extra = sorted(set(by_id) - set(created.runs))
        if extra:
            problems.append(f"experiment {created.id}: runs {extra} listed but never created")
            counts["extra"] += len(extra)
    duplicates = 0
    for created in list(world.keyed):
        same = list_all(conn, f"/experiments?name={urllib.parse.quote(created.name)}", auth, deadline)
        if same is None:
            problems.append(f"experiments named {created.name}: could not be listed")
        elif len(same) != 1:
            duplicates += 1
            problems.append(f"key {created.key}: {len(same)} experiments named {created.name} "
                            f"({sorted(e.get('id') for e in same)}): the key did not make it one")
    total_listed = None
    if own_stack:
        status, data, headers = get_json(conn, "/runs?page_size=1", auth)
        if status == 200 and headers is not None:
            total_listed = int(json.loads(headers.get("X-Pagination") or "{}").get("total", -1))
            created_runs = sum(len(e.runs) for e in world.experiments.values())
            if total_listed != created_runs:
                problems.append(f"the API lists {total_listed} runs in all, {created_runs} were created here"
                                + (f" ({len(world.unknown_posts)} POSTs got no answer: they may have created "
                                   "experiments)" if world.unknown_posts else ""))
    conn.close()
    created_runs = sum(len(e.runs) for e in world.experiments.values())
    print(f"  created:   {len(world.experiments)} experiments, {created_runs} runs "
          f"({len(world.keyed)} experiments with an Idempotency-Key; {len(world.cancel_accepted)} cancellations "
          f"accepted)")
    print(f"  listed:    {listed_total} runs under those experiments"
          + (f"; {total_listed} runs in all on this stack" if total_listed is not None else ""))
    print("  final:     " + ", ".join(f"{counts[s]} {s}" for s in FINAL)
          + f"; not final {sum(v for k, v in counts.items() if k not in FINAL + ('lost', 'extra'))}"
          + f"; lost {counts['lost']}; extra {counts['extra']}; duplicate experiments per key {duplicates}")
    print(f"  cancelled: {cancelled_ok} of {len(world.cancel_accepted)} accepted cancellations ended cancelled, "
          f"{succeeded_despite_cancel} finished first (succeeded: the cancel reached a run in its last heartbeat)")
    if attempts_over_1:
        print(f"  re-run:    {len(attempts_over_1)} runs took more than one attempt: {', '.join(attempts_over_1[:10])}")
    if world.unknown_posts:
        print(f"  unknown:   {len(world.unknown_posts)} POSTs of an experiment got no answer")
    return problems


def check_logs(logs: dict, world: World) -> list[str]:
    """Every result stored once, by the workers' own account; the tracebacks and errors they logged."""
    problems: list[str] = []
    results_twice = sorted(r for r, n in logs["succeeded"].items() if n > 1)
    ours = {r for e in world.experiments.values() for r in e.runs}
    stored = set(logs["succeeded"])
    print(f"  workers:   {sum(logs['attempts'].values())} attempts, {len(stored)} results stored, "
          f"{sum(logs['skipped'].values())} deliveries not claimed (already finished or cancelled); "
          f"results stored twice: {len(results_twice)}")
    if results_twice:
        problems.append(f"runs whose result a worker stored more than once: {results_twice[:20]}")
    unknown = sorted(stored - ours)
    if unknown:
        problems.append(f"workers stored results of runs never created here: {unknown[:20]}")
    if logs["tracebacks"]:
        print(f"  logs:      {len(logs['tracebacks'])} tracebacks, {len(logs['errors'])} ERROR lines")
        for name, text in logs["tracebacks"][:3]:
            print(f"  --- {name}:\n" + "\n".join("    " + line for line in text.splitlines()))
    elif logs["errors"]:
        print(f"  logs:      {len(logs['errors'])} ERROR lines")
    for name, line in logs["errors"][:5]:
        print(f"    {name}: {line}")
    return problems


# --- main ---------------------------------------------------------------------------------------------

def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running service on loopback (default: start the full stack here)")
    parser.add_argument("--token", default=os.environ.get("VMEMLAB_TOKEN"),
                        help="with --url: a bearer token with the write (or admin) role (default $VMEMLAB_TOKEN)")
    parser.add_argument("--clients", default="16",
                        help="concurrent clients; a comma-separated list runs one phase each (default 16)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per phase (default 30)")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="mean wait of each client between requests (default 0: back to back)")
    parser.add_argument("--submit-rate", type=float, default=2.0,
                        help="experiments posted per second at most, all clients together (default 2)")
    parser.add_argument("--max-backlog", type=int, default=12,
                        help="no experiment is posted while this many of its runs are unfinished (default 12)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take (default 30)")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="seconds to wait at the end for the runs to finish (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes started (default 2)")
    parser.add_argument("--worker-concurrency", type=int, default=1,
                        help="simulations at once per worker (default 1: two workers, one per core)")
    parser.add_argument("--api-workers", type=int, default=None,
                        help="gunicorn worker processes (default: vmemlab serve's, two per core)")
    parser.add_argument("--api-threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    parser.add_argument("--serve-migrates", action="store_true",
                        help="start `vmemlab serve` without --no-upgrade, as docker-compose's api does (it then "
                             "migrates and looks for tokens itself before forking its workers)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES,
                        help=f"PostgreSQL admin URL; the scratch database is created beside it (default {DEFAULT_POSTGRES})")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS,
                        help=f"Redis URL with a database number of its own: flushed before and after (default {DEFAULT_REDIS})")
    parser.add_argument("--env", action="append", metavar="NAME=VALUE",
                        help="an extra environment variable for the started processes (repeatable)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the clients (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) even without errors")
    args = parser.parse_args(argv)
    try:
        phases = [min(max(int(c), 1), 512) for c in str(args.clients).split(",") if c.strip()]
    except ValueError:
        parser.error(f"--clients {args.clients!r}: expected numbers, e.g. 16 or 4,16,32")
    args.seconds = min(max(args.seconds, 1.0), 3600.0)
    args.drain_timeout = min(max(args.drain_timeout, 1.0), 3600.0)
    args.workers = min(max(args.workers, 1), 16)

    # SIGINT too, even where the shell started this in the background with SIGINT ignored
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    tmp = Path(tempfile.mkdtemp(prefix="vmemlab-load-"))
    stack: Optional[Stack] = None
    stop = threading.Event()
    failed = True
    print(f"cpu:          {os.cpu_count()} logical cores, shared by the load client, the API, the workers, "
          "PostgreSQL and Redis")
    try:
        if args.url:
            url = args.url.rstrip("/")
            if url.endswith(API):
                url = url[: -len(API)]
            token = args.token
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            health = wait_health(url, auth, 30, 0, lambda: True)
            print(f"service:      {url} (health: {health.get('status')}; workers "
                  f"{(health.get('workers') or {}).get('workers')}); token: {'given' if token else 'none'}")
        else:
            stack = Stack(args, tmp)
            stack.flush_redis()
            stack.create_database()
            print(f"stack:        PostgreSQL database {stack.db_name} (scratch), Redis {stack.redis_url} (flushed)")
            stack.start()
            token = stack.token()
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            url = stack.url
            t0 = time.perf_counter()
            health = wait_health(url, auth, 180, args.workers, stack.alive)
            print(f"service:      {url}: API gunicorn, {args.api_workers or 'default'} workers x "
                  f"{args.api_threads} threads; {args.workers} Celery workers x {args.worker_concurrency} "
                  f"(seen: {', '.join(health['workers']['workers'])}); healthy after {time.perf_counter() - t0:.1f} s")
            print(f"token:        {'an admin token from vmemlab tokens create, sent on every request' if token else 'none (this checkout has no `vmemlab tokens`: the API is open)'}")

        if token:
            # the token matters: a write without it is refused
            probe = Connection(url, timeout=args.timeout)
            try:
                status, _, payload = probe.exchange("POST", API + "/hosts", {"name": "load-no-token", "spec": HOST_SPEC})
            finally:
                probe.close()
            print(f"auth:         POST /hosts without the token: {status}"
                  + ("" if status in (401, 403) else f" (expected 401: the API took a write without a token: "
                                                     f"{payload[:200].decode(errors='replace')})"))
        world = World(args.submit_rate, args.max_backlog)
        tag = f"{os.getpid()}-{secrets.token_hex(2)}"
        # warm-up: one experiment under every fast policy, to load the engine in the workers
        warm = Client(0, url, token, world, tag, args.timeout, args.seed)
        doc = tiny(policies=FAST_POLICIES)
        doc["name"] = f"load-{tag}-warmup"
        t0 = time.perf_counter()
        outcome, status, data, _ = warm.call("warm-up", "POST", "/experiments", doc, ok=(201,))
        if outcome != "ok":
            raise SystemExit(f"warm-up POST /experiments: {status}: {data}")
        warm._created(outcome, data, doc, None, "warm-up")
        waited, left = drain(url, auth, world, 180)
        if left:
            raise SystemExit(f"warm-up: {left} runs not finished after {waited:.0f} s")
        print(f"warm-up:      {len(doc['policies'])} tiny runs finished {time.perf_counter() - t0:.1f} s after the POST")
        print(f"mix:          reads: runs lists (filters, sorts), run polling, experiments, comparisons, series, "
              f"health, hosts; writes: experiments (<= {args.submit_rate:g}/s, backlog <= {args.max_backlog} runs; "
              "1/3 with Idempotency-Key, some replayed, some sent twice at once), hosts and templates "
              "(POST, PATCH with If-Match, some stale), cancellations")

        summary = []
        for clients in phases:
            if stack is not None and not stack.alive():
                raise SystemExit("a process of the stack exited: " + ", ".join(
                    f"{p.name} {p.proc.returncode}" for p in stack.processes if not p.alive()))
            backlog = world.backlog()
            totals, wall = phase(url, token, world, tag, clients, args.seconds, args.think_ms, args.timeout, stop,
                                 args.seed + clients)
            pace = f"~{args.think_ms:g} ms between requests" if args.think_ms else "back to back"
            everything = report(f"{clients} clients, {pace}, {args.seconds:g} s (runs unfinished at the start: "
                                f"{backlog}, at the end: {world.backlog()})", totals, wall)
            summary.append((clients, everything, wall))

        print(f"== waiting for the runs (at most {args.drain_timeout:g} s)")
        waited, left = drain(url, auth, world, args.drain_timeout)
        print(f"  {'all finished' if not left else f'{left} runs still unfinished'} after {waited:.1f} s")
        print("== checking what the API lists against what was created")
        problems = verify(url, auth, world, own_stack=stack is not None)
        if stack is not None:
            print("== stopping the stack; what the processes logged")
            stack.stop()               # the workers' logs are complete once they stopped
            problems += check_logs(stack.log_findings(), world)
        for p in problems[:30]:
            print(f"  PROBLEM: {p}")
        if len(problems) > 30:
            print(f"  ... {len(problems) - 30} more")

        print("== summary")
        errors = 0
        for clients, everything, wall in summary:
            n = len(everything.latencies) + everything.connection
            lat = [x * 1000 for x in everything.latencies]
            errors += everything.errors
            print(f"  {clients:>3} clients: {n / wall:7.1f} req/s, p50 {percentile(lat, 50):6.1f} ms, "
                  f"p99 {percentile(lat, 99):7.1f} ms; errors: {everything.server_5xx} 5xx, "
                  f"{everything.unexpected_4xx} unexpected 4xx, {everything.connection} connection; "
                  f"{everything.expected_4xx} expected 4xx")
        clean = [c for c, e, _ in summary if not e.errors]
        print(f"  zero errors at: {', '.join(map(str, clean)) or 'none'} clients; runs: "
              f"{'every run created reached a final state once, none lost' if not problems else f'{len(problems)} problems'}; "
              f"verdict: {'PASS' if not errors and not problems else 'FAIL'}")
        failed = bool(errors or problems)
        return 1 if failed else 0
    except KeyboardInterrupt as exc:
        stop.set()
        print(f"\ninterrupted ({exc or 'Ctrl-C'}): stopping")
        return 130
    finally:
        stop.set()
        if stack is not None:
            if any(p.alive() for p in stack.processes):
                stack.stop()
            try:
                stack.drop_database()
            except Exception as exc:
                print(f"could not drop database {stack.db_name}: {exc}")
                failed = True
            try:
                if stack.flushed_redis:
                    stack.flush_redis()
            except Exception as exc:
                print(f"could not flush {stack.redis_url}: {exc}")
        for s, handler in previous.items():
            signal.signal(s, handler)
        if args.keep or failed:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
