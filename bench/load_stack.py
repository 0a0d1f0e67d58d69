"""bench/load.py's stack: a scratch PostgreSQL database, Redis, the API and the workers as child
processes (each in its own session, stopped with this script), and waiting for them to answer."""
from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from api_client import Connection, free_port
from load_world import API, ROOT



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
