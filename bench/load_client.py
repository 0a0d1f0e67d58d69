"""bench/load.py's client: one thread, one keep-alive connection, the operation mix, and a
phase of many clients with its report."""
from __future__ import annotations

import collections
import json
import random
import secrets
import threading
import time
from typing import Any, Callable, Optional

from api_client import Connection, percentile
from load_world import (API, HOST_SPEC, RUN_LISTS, TEMPLATE_SPEC, Created, OpStats, Owned, Recorder, World, 
                        experiment_document)





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
