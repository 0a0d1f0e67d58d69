"""Running the service: the API under gunicorn, the Celery worker, and both together on one
machine (``vmemlab serve``, ``vmemlab worker``, ``vmemlab up``; service.cli parses the options).

- The API runs under gunicorn's ``gthread`` workers: one process per core (the GIL makes one
  process's threads share one core), each with a few threads (they overlap one request's wait on
  the database with another's work). Measured with bench/api.py on 2 cores: 2 processes x 4
  threads served the read mix about 1.4 times as fast as the earlier 4 x 4, with half the
  p99: once finished results are served from each process's cache (service.api.finished), a
  request is CPU, and more processes than cores only add context switches and cold caches. The
  app is built in each worker after the fork (no preload), so no process shares another's
  database connections.
- The worker is ``celery -A service.celery_app worker``, exec'ed: signals reach Celery itself.
- ``up`` starts both as child processes in their own sessions, so that a Ctrl-C in the terminal
  reaches ``up`` alone, which forwards one SIGTERM to each (gunicorn: graceful stop; Celery: warm
  shutdown, finishing the simulations it runs); a second Ctrl-C asks both to stop at once
  (SIGQUIT: Celery's cold shutdown; the runs it was simulating are re-queued by the next worker
  that finds their heartbeat stale). On Linux the children also get SIGTERM if ``up`` itself dies.
- All three set ``PROMETHEUS_MULTIPROC_DIR`` before any process that keeps metrics starts
  (service.prometheus): gunicorn's and Celery's processes then write their values to one folder
  that a scrape of ``/metrics`` adds up.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TextIO

APP_FACTORY = "service.app:create_app"
CELERY_APP = "service.celery_app:app"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


# --- the API: gunicorn ----------------------------------------------------------------------------

def default_web_workers() -> int:
    """One per core, at least 2 (one busy with a slow request leaves another) and at most 8."""
    return max(2, min(8, os.cpu_count() or 1))


def gunicorn_options(host: str, port: int, workers: int, threads: int, access_log: bool,
                     timeout_s: int = 60) -> dict[str, Any]:
    return {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout_s,              # a worker silent this long is restarted
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "vmemlab-api",
        "preload_app": False,              # build the app (and its engines) in each worker
        # the workers' heartbeat files: in memory where there is /dev/shm (a container's /tmp
        # may be on a slow overlay file system)
        "worker_tmp_dir": "/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
        # gunicorn >= 25.1 opens a control socket at one path per user ($HOME/.gunicorn): two
        # servers of one user (tests, a benchmark beside `make run`) would share it. Not used here.
        "control_socket_disable": True,
        "post_fork": forget_inherited_connections,
        "child_exit": forget_dead_worker_metrics,
    }


def forget_inherited_connections(_server: Any = None, _worker: Any = None) -> None:
    """gunicorn's post_fork: a worker must never use a pooled database connection it inherited
    from the arbiter (`vmemlab serve` reads the database before it forks): two processes on one
    socket mix up each other's answers."""
    from . import db

    db.dispose_engines(close=False)


def forget_dead_worker_metrics(_server: Any, worker: Any) -> None:
    """gunicorn's child_exit: a dead worker's live gauges (requests in progress) go with it; its
    counters stay in the sums."""
    if os.environ.get(METRICS_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process_id(worker.pid))


def run_gunicorn(options: dict[str, Any], app_factory: Callable[[], Any]) -> None:
    """Run gunicorn's arbiter in this process until it is stopped (SIGTERM: graceful)."""
    from gunicorn.app.base import BaseApplication

    class VmemlabAPI(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None and key in self.cfg.settings:   # older gunicorns lack some
                    self.cfg.set(key, value)

        def load(self):
            return app_factory()

    VmemlabAPI(prog="vmemlab serve").run()


def load_app():
    """The Flask app, built from the environment's settings (called in each gunicorn worker)."""
    from .app import create_app

    return create_app()


def api_available() -> bool:
    """Whether service.app (the Flask app factory) is installed."""
    import importlib.util

    return importlib.util.find_spec("service.app") is not None


# --- metrics: the folder the processes share -----------------------------------------------------------

def process_id(pid: Optional[int] = None) -> str:
    """A process's name in the metrics files: host and pid (containers sharing the folder have pids
    in separate namespaces, where pid alone would collide)."""
    return f"{_host_name()}-{os.getpid() if pid is None else pid}"


@functools.cache
def _host_name() -> str:
    # once per process: prometheus-client asks for the process id at every metric update, inside
    # the lock all of a process's threads share, and a gethostname() there made them queue
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"


def prepare_metrics_dir(data_dir: Path) -> str:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` (default ``<data_dir>/prometheus``) for this process and its
    children, create the folder, and remove the files of this host's processes that are gone:
    their counters would otherwise stay in the sums forever (a restart is a counter reset, which
    Prometheus's rate() expects). Call it before any process that keeps metrics starts, and before
    this one imports service.prometheus."""
    path = os.environ.get(METRICS_DIR_ENV) or str(Path(data_dir) / "prometheus")
    Path(path).mkdir(parents=True, exist_ok=True)
    os.environ[METRICS_DIR_ENV] = path
    prefix = process_id(0)[:-1]                          # "<host>-"
    for file in glob.glob(os.path.join(glob.escape(path), f"*_{glob.escape(prefix)}*.db")):
        pid = file[file.rindex(prefix) + len(prefix):-len(".db")]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.remove(file)
            except FileNotFoundError:
                pass
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # someone else's process
        return True
    return True


# --- the worker: Celery ---------------------------------------------------------------------------

def celery_worker_argv(concurrency: Optional[int], loglevel: str, hostname: Optional[str] = None,
                       queues: Optional[str] = None, quiet: bool = False, embedded: bool = False) -> list[str]:
    """``python -m celery [-q] -A service.celery_app:app worker ...`` (``-q``: no banner). On the
    embedded SQLite broker, which has no broadcast, without gossip, mingle and event heartbeats
    (each would only poll the broker's database for messages that never come)."""
    argv = [sys.executable, "-m", "celery"] + (["--quiet"] if quiet else [])
    # --include: the worker counts the runs it ends for /metrics (service.prometheus)
    argv += ["-A", CELERY_APP, "worker", f"--loglevel={loglevel.upper()}", "--include=service.prometheus"]
    if embedded:
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    if queues:
        argv.append(f"--queues={queues}")
    return argv


# --- up: both together ------------------------------------------------------------------------------

def _set_parent_death_signal() -> None:
    """In the child, before exec: get SIGTERM if the parent dies (Linux), so that a killed
    ``up`` leaves no API or worker behind."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    process: Optional[subprocess.Popen] = None
    signals_sent: list[int] = field(default_factory=list)

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, signum: int) -> None:
        if self.alive():
            try:
                self.process.send_signal(signum)
                self.signals_sent.append(signum)
            except ProcessLookupError:
                pass


class Supervisor:
    """Starts child processes, forwards SIGINT/SIGTERM to them, waits for them to end.

    The first stop signal sends SIGTERM to every child (graceful), the second SIGQUIT (at once),
    the third SIGKILL. If a child exits on its own, the others are stopped as well.
    """

    ESCALATION = (signal.SIGTERM, signal.SIGQUIT, signal.SIGKILL)

    def __init__(self, out: TextIO, env: Optional[dict[str, str]] = None):
        self.out = out
        self.env = env
        self.children: list[Child] = []
        self.stops = 0               # how many stop signals were received (or stop() calls)
        self.reason: Optional[str] = None
        self._previous: dict[int, Any] = {}

    # signals ---------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop(f"received {signal.Signals(signum).name}")

    @property
    def stopping(self) -> bool:
        return self.stops > 0

    def stop(self, reason: str) -> None:
        """Ask every child to stop; each further call asks more firmly."""
        level = min(self.stops, len(self.ESCALATION) - 1)
        self.stops += 1
        if self.reason is None:
            self.reason = reason
        signum = self.ESCALATION[level]
        live = [c for c in self.children if c.alive()]
        if not live:
            return
        if level == 0:
            self._say(f"stopping ({reason}): SIGTERM to "
                      + ", ".join(f"{c.name} (pid {c.pid})" for c in live)
                      + "; the worker finishes the simulations it is running. Ctrl-C again to stop at once.")
        else:
            self._say(f"stopping at once ({reason}): {signal.Signals(signum).name} to "
                      + ", ".join(f"{c.name} (pid {c.pid})" for c in live))
        for child in live:
            child.send(signum)

    # children --------------------------------------------------------------------------------

    def start(self, name: str, argv: Sequence[str]) -> Child:
        child = Child(name, list(argv))
        child.process = subprocess.Popen(
            child.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None)
        self.children.append(child)
        return child

    def all_alive(self) -> bool:
        return all(c.alive() for c in self.children)

    def check(self) -> Optional[Child]:
        """The first child that exited while it was not asked to, after stopping the others."""
        for child in self.children:
            if not child.alive() and not self.stopping:
                code = child.process.returncode if child.process else None
                self.stop(f"{child.name} exited with status {code}")
                return child
        return None

    def sleep(self, seconds: float) -> None:
        """Sleep, waking up early if a stop was asked for (signal handlers interrupt sleep)."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def wait(self, poll_s: float = 0.2) -> int:
        """Block until every child has exited (a child exiting on its own stops the others).
        Returns 0 if they were asked to stop and did, else 1."""
        failed = None
        while any(c.alive() for c in self.children):
            exited = self.check()
            if exited is not None and failed is None:
                failed = exited
            time.sleep(poll_s)
        exited = self.check()
        failed = failed or exited
        for child in self.children:
            code = child.process.returncode if child.process else None
            self._say(f"{child.name} (pid {child.pid}) exited with status {_describe_status(code)}")
        return 1 if failed is not None else 0

    def _say(self, text: str) -> None:
        self.out.write(f"vmemlab up: {text}\n")
        self.out.flush()


def _describe_status(code: Optional[int]) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)
