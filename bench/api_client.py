"""bench/api.py's clients: a blocking keep-alive connection for the set-up steps (bench/load.py
uses it too), and the load generator, which shares the two cores with the server it measures.

The load generator is one asyncio loop in one thread: each client is a coroutine with its own
keep-alive connection, writing a prepared request and reading the answer by its Content-Length.
Fifty http.client threads cost about three times the CPU per request (the GIL handing over among
threads, http.client's header parsing in Python) and that CPU was taken from the server; the
figures state the client's CPU share beside every phase.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import random
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _loopback(base_url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"bench/api.py drives loopback servers only, not {parsed.hostname}")
    return parsed.hostname, parsed.port or 80


class Connection:
    """One keep-alive connection; reconnects after an error."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.host, self.port = _loopback(base_url)
        self.timeout = timeout
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


# --- the load generator --------------------------------------------------------------------------------

class _Broken(Exception):
    pass


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes, bytes]:
    """(status, raw headers, body) of one keep-alive GET."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        if status == 304 or 100 <= status < 200 or status == 204:
            return status, head, b""
        raise _Broken(f"HTTP {status} without Content-Length")
    end = lower.index(b"\r\n", at + 2)
    body = await reader.readexactly(int(head[at + 17:end]))
    if b"\r\nconnection: close" in lower:
        raise _Broken("the server closed the connection")
    return status, head, body


def _etag(head: bytes) -> Optional[str]:
    lower = head.lower()
    at = lower.find(b"\r\netag:")
    if at < 0:
        return None
    end = lower.index(b"\r\n", at + 2)
    return head[at + 7:end].strip().decode("latin-1")


def drive(url: str, endpoints: dict[str, Callable[[random.Random], str]], clients: int, seconds: float,
          think_ms: float = 0.0, revalidate: bool = False) -> tuple[dict[str, Stats], float, float]:
    """``clients`` coroutines, each with its own keep-alive connection, request a random endpoint
    until the deadline, waiting ``think_ms`` between requests. With ``revalidate``, each client
    keeps the ETag of every path it read and sends it back (If-None-Match), as a browser or a
    polling dashboard does; a 304 then counts as an answer. Returns the stats per endpoint, the
    measured wall time and the client's CPU time over that wall time (1.0: one core)."""
    return asyncio.run(_drive(url, endpoints, clients, seconds, think_ms, revalidate))


async def _drive(url: str, endpoints: dict[str, Callable[[random.Random], str]], clients: int, seconds: float,
                 think_ms: float, revalidate: bool) -> tuple[dict[str, Stats], float, float]:
    host, port = _loopback(url)
    names = list(endpoints)
    per_client: list[dict[str, Stats]] = [{n: Stats() for n in names} for _ in range(clients)]
    ready = asyncio.Event()
    deadline = [0.0]
    prefix = f"Host: {host}:{port}\r\nAccept: application/json\r\n"

    async def client(i: int) -> None:
        rng = random.Random(i)
        stats = per_client[i]
        etags: dict[str, str] = {}
        reader = writer = None
        await ready.wait()
        if think_ms:         # independent clients: not all at the same instant at the start
            await asyncio.sleep(rng.uniform(0, think_ms / 1000))
        while time.perf_counter() < deadline[0]:
            name = names[rng.randrange(len(names))]
            path = endpoints[name](rng)
            tag = etags.get(path) if revalidate else None
            request = (f"GET {path} HTTP/1.1\r\n{prefix}"
                       + (f"If-None-Match: {tag}\r\n" if tag else "") + "\r\n").encode()
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                status, head, _ = await _exchange(reader, writer, request)
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                    _Broken) as exc:
                stats[name].errors += 1
                stats[name].first_error = stats[name].first_error or f"{type(exc).__name__}: {exc}"
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            elapsed = time.perf_counter() - t0
            stats[name].statuses[status] = stats[name].statuses.get(status, 0) + 1
            if status == 200 or (status == 304 and tag):
                stats[name].latencies.append(elapsed)
                if revalidate and status == 200:
                    found = _etag(head)
                    if found:
                        etags[path] = found
            else:
                stats[name].errors += 1
                stats[name].first_error = stats[name].first_error or f"HTTP {status} for {path}"
            if think_ms:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * think_ms / 1000)
        if writer is not None:
            writer.close()

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(0)
    cpu = time.process_time()
    start = time.perf_counter()
    deadline[0] = start + seconds
    ready.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    wall = time.perf_counter() - start
    cpu_share = (time.process_time() - cpu) / wall
    totals = {n: Stats() for n in names}
    for stats in per_client:
        for n in names:
            totals[n].add(stats[n])
    return totals, wall, cpu_share


# --- the set-up and submission steps ---------------------------------------------------------------

def wait_health(url: str, timeout: float, alive: Callable[[], bool] = lambda: True, path: str = "/api/v1/health") -> None:
    conn = Connection(url, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise SystemExit("the service exited before it answered")
        try:
            status, _ = conn.request("GET", path)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer {path} within {timeout:g} s")


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
