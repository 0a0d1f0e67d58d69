"""bench/load.py's model of what the clients send and have created: the experiment documents, the runs lists
they read, per-operation statistics and the world of created items that they share."""
from __future__ import annotations

import collections
import itertools
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# bench/ is on the path of the script that imports this (bench/load.py)
from api_store import busy, tiny

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # load-test this checkout


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
