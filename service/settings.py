"""Every setting of the service, read from the environment in one place.

With nothing set, everything runs on one machine: SQLite for the database, SQLite for the Celery
broker (kombu's SQLAlchemy transport) and result backend, all under ``./var``. Setting
``DATABASE_URL`` and ``REDIS_URL`` switches to the full stack (PostgreSQL and Redis); the code is
the same.

Variables:

``VMEMLAB_DATA_DIR``
    Folder for everything the embedded default keeps on disk (database, broker, results, traces).
    Default ``./var``.
``DATABASE_URL``
    SQLAlchemy URL of the database. Default ``sqlite:///<data_dir>/vmemlab.db``. ``postgres://``
    (Heroku style) is accepted and read as ``postgresql://``; PostgreSQL URLs without a driver use
    psycopg 3 (service.db.normalize_url).
``REDIS_URL``
    Redis URL used as Celery broker and result backend. Unset: the broker is
    ``sqla+sqlite:///<data_dir>/broker.db`` and the result backend ``db+sqlite:///<data_dir>/results.db``.
``VMEMLAB_TRACE_DIR``
    Where uploaded traces are stored (by checksum). Default ``<data_dir>/traces``. Every worker
    must see the same files (a shared volume when workers run on several machines).
``VMEMLAB_QUEUE``
    Celery queue the run tasks go to. Default ``vmemlab``.
``PROMETHEUS_MULTIPROC_DIR``
    prometheus-client's own variable, read by service.serving and service.prometheus, not here:
    the folder where the API's and the workers' processes keep their metrics. ``vmemlab serve``,
    ``worker`` and ``up`` default it to ``<data_dir>/prometheus``.
``VMEMLAB_MAX_TRACE_BYTES``
    Largest trace upload accepted. Default 512 MiB.
``VMEMLAB_MAX_POLICIES``
    Most policies (hence runs) one experiment may ask for. Default 32.
``VMEMLAB_MAX_REQUEST_BYTES``
    Largest JSON request body the API accepts (413 over it). Default 16 MiB.
``VMEMLAB_MAX_VMS``
    Most VMs one experiment may simulate. Default 256. Also the most copies a capacity search
    may try.
``VMEMLAB_MAX_SWEEP_RUNS``
    Most runs (points times policies) one sweep may make. Default 1000.
``VMEMLAB_MAX_DURATION_S``
    Longest simulated time of an experiment, in seconds. Default 86400 (a day).
``VMEMLAB_MAX_EPOCHS``
    Most epochs (``duration_s / epoch_s``) of an experiment. Default 1e6.
``VMEMLAB_MAX_REFS``
    Most page references one run may simulate, all VMs together, as estimated from the
    scenario before it is stored (service.limits). Default 5e10.
``VMEMLAB_MAX_SIM_MEMORY_MB``
    Most engine state (frame, page and trace arrays) one run may allocate, estimated from the
    scenario before it is stored (service.limits). Default 4096 MB.


An experiment over one of the ``VMEMLAB_MAX_*`` limits of experiments is refused (the API answers
422 naming the limit and its value) and nothing is stored; ``vmemlab simulate`` applies none.

``VMEMLAB_MAX_PAGE_SIZE``
    Most items one page of a list may hold (``page_size``; 10 by default). Default 100, at
    most 10000.
``VMEMLAB_OPEN_READS``
    ``1``: anyone may read (GET) without a token; ``0``: reads need a token too. Writes always
    need a bearer token (``vmemlab tokens create``), and plugin registration an admin token.
    Default 1.
``VMEMLAB_CHANGE_FEED``
    PostgreSQL: ``1``: each API process listens to the database's change notifications and
    keeps the answers to hot reads until what they show changes (service.change_feed); ``0``:
    every read asks the database (behind a pooler in transaction mode, which cannot keep a
    LISTEN). Ignored on SQLite. Default 1.
``VMEMLAB_ADMIN_TOKEN``
    An admin token to accept (at least 32 characters; e.g. ``vml_`` and ``secrets.token_urlsafe(32)``).
    ``vmemlab serve`` and ``vmemlab up`` store its hash when they start, so that a deployment
    (docker-compose) has a token without running ``vmemlab tokens create``. Default none.
``VMEMLAB_PLUGIN_TIME_LIMIT_S``
    Longest wall time one call of a plugin hook (``setup``, ``admit``, ``on_stop``, ``on_epoch``,
    ``select_victims``) may take on a worker before the run fails naming the plugin and the hook;
    0 means none. Default 10 s. It must be shorter than the stale time (``VMEMLAB_HEARTBEAT_S`` ×
    ``VMEMLAB_STALE_HEARTBEATS``): no heartbeat is written while a hook runs. ``vmemlab
    simulate`` (local, e.g. under a debugger) applies none.
``VMEMLAB_PLUGINS_AUTO_ENABLE``
    Which installed policies experiments may use without an admin registering them:
    ``builtin`` (the policies that ship with vmemlab; third-party ones are listed as available
    until an admin registers them, and need approving again when their version changes),
    ``all`` (every installed policy in whatever version is installed) or ``none`` (a closed
    deployment: an admin registers every policy, built-ins included). Default ``builtin``.
``VMEMLAB_MAX_ATTEMPTS``
    A run whose worker stops heartbeating is run again, at most this many attempts in all; then
    it fails (a plugin that kills its process or hangs in C code would otherwise take worker
    after worker). Default 3.
``VMEMLAB_REQUEUE_AFTER_S``
    A run still queued this long after it was last sent to the broker is sent again, in case
    the broker lost its message, when the queue holds fewer messages than there are queued runs.
    A second delivery of a run is harmless (the run row is the lock). Default 300 s. A Redis that
    comes back empty is noticed sooner (``VMEMLAB_BROKER_CHECK_S``): this is for the rarer loss
    of some messages only.
``VMEMLAB_BROKER_CHECK_S``
    How often each worker retries a lost broker connection, and looks whether the broker came
    back without its messages (a Redis restarted without persistence, or flushed): then every
    queued run is sent again at once (service.broker_watch). Default 2 s.
``VMEMLAB_WORKER_CONCURRENCY``
    Simulations one worker runs at once, one process each (``vmemlab worker --concurrency``
    overrides it). Unset: one per core of the machine. A simulation keeps one core busy, so the
    workers of one machine together should run about one per core: with ``docker compose up
    --scale worker=N`` on one host, set it to the host's cores divided by N.
``VMEMLAB_HEARTBEAT_S``
    How often a running simulation writes its progress and heartbeat and checks for a
    cancellation request. Default 0.5 s.
``VMEMLAB_STALE_HEARTBEATS``
    A run whose heartbeat is older than this many heartbeat intervals is taken to have lost its
    worker: it is re-queued and another worker finishes it. Default 60 (30 s with the default
    heartbeat). It must exceed the wall time of the longest stretch without progress: one epoch,
    or the first compile of the engine on a fresh machine (about 10 s).
``VMEMLAB_RUN_TIME_LIMIT_S``
    Time limit of one run on a worker; 0 means none. Default 0. At the limit the run fails
    (Celery's soft limit); a run that does not stop then (a plugin stuck in C code) is killed at
    the hard limit, the limit plus min(30 s, max(2 s, limit / 2)): its pool process is replaced and
    the run fails naming the plugin.
``VMEMLAB_SQL_ECHO``
    ``1`` logs every SQL statement. Default off.
``VMEMLAB_DOCS_UI_URL``
    Where the browser loads Swagger UI from for the interactive API docs at ``/api/v1/docs``
    (the server itself never fetches it). Default ``/api/v1/docs/swagger-ui/``: the files of the
    installed ``flask-swagger-ui`` distribution, served by the app itself, so the docs work
    without Internet access. A URL (e.g. a CDN's ``swagger-ui-dist``) loads them from there
    instead; ``off`` serves no docs page (``/api/v1/openapi.json`` is always served).
``VMEMLAB_SECRET_KEY``
    Signs the web pages' session cookie (the token a person typed in, kept for the browser
    session). Every API process must use the same one. Default: a random key made once and
    kept in ``<data_dir>/secret_key``.

Durations are seconds (floats); sizes are bytes (integers, ``_`` separators allowed); counts are
integers and may be written ``5e10`` or ``50_000_000_000``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional


# served by service.web from the installed flask-swagger-ui distribution: no CDN, no network
DEFAULT_DOCS_UI_URL = "/api/v1/docs/swagger-ui/"


class SettingsError(ValueError):
    """An environment variable with a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: Optional[str] = None
    trace_dir: Path = field(default=None)  # type: ignore[assignment]  # filled in by __post_init__
    queue: str = "vmemlab"
    max_trace_bytes: int = 512 * 2**20
    max_policies: int = 32
    max_request_bytes: int = 16 * 2**20
    max_vms: int = 256
    max_sweep_runs: int = 1000
    max_duration_s: float = 86400.0
    max_epochs: int = 1_000_000
    max_refs: int = 50_000_000_000
    max_sim_memory_mb: int = 4096
    max_page_size: int = 100
    open_reads: bool = True
    change_feed: bool = True
    admin_token: Optional[str] = field(default=None, repr=False)
    plugin_time_limit_s: float = 10.0
    plugins_auto_enable: str = "builtin"
    max_attempts: int = 3
    requeue_after_s: float = 300.0
    broker_check_s: float = 2.0
    worker_concurrency: Optional[int] = None
    heartbeat_s: float = 0.5
    stale_heartbeats: int = 60
    run_time_limit_s: float = 0.0
    sql_echo: bool = False
    docs_ui_url: Optional[str] = DEFAULT_DOCS_UI_URL
    secret_key: Optional[str] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.trace_dir is None:
            object.__setattr__(self, "trace_dir", self.data_dir / "traces")
        else:
            object.__setattr__(self, "trace_dir", Path(self.trace_dir).expanduser())

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        env = os.environ if environ is None else environ
        data_dir = Path(_text(env, "VMEMLAB_DATA_DIR") or "./var").expanduser().resolve()
        database_url = _text(env, "DATABASE_URL") or f"sqlite:///{data_dir / 'vmemlab.db'}"
        if database_url.startswith("postgres://"):
            database_url = "postgresql://" + database_url[len("postgres://"):]
        trace_dir = _text(env, "VMEMLAB_TRACE_DIR")
        settings = cls(
            data_dir=data_dir,
            database_url=database_url,
            redis_url=_text(env, "REDIS_URL"),
            trace_dir=Path(trace_dir).expanduser().resolve() if trace_dir else data_dir / "traces",
            queue=_text(env, "VMEMLAB_QUEUE") or "vmemlab",
            max_trace_bytes=_number(env, "VMEMLAB_MAX_TRACE_BYTES", int, 512 * 2**20, low=1),
            max_policies=_number(env, "VMEMLAB_MAX_POLICIES", int, 32, low=1),
            max_request_bytes=_number(env, "VMEMLAB_MAX_REQUEST_BYTES", int, 16 * 2**20, low=1024),
            max_vms=_count(env, "VMEMLAB_MAX_VMS", 256),
            max_sweep_runs=_count(env, "VMEMLAB_MAX_SWEEP_RUNS", 1000),
            max_duration_s=_number(env, "VMEMLAB_MAX_DURATION_S", float, 86400.0, low=0.001),
            max_epochs=_count(env, "VMEMLAB_MAX_EPOCHS", 1_000_000),
            max_refs=_count(env, "VMEMLAB_MAX_REFS", 50_000_000_000),
            max_sim_memory_mb=_count(env, "VMEMLAB_MAX_SIM_MEMORY_MB", 4096),
            max_page_size=_count(env, "VMEMLAB_MAX_PAGE_SIZE", 100, high=10_000),
            open_reads=_flag(env, "VMEMLAB_OPEN_READS", default=True),
            change_feed=_flag(env, "VMEMLAB_CHANGE_FEED", default=True),
            admin_token=_secret(env, "VMEMLAB_ADMIN_TOKEN"),
            plugin_time_limit_s=_number(env, "VMEMLAB_PLUGIN_TIME_LIMIT_S", float, 10.0, low=0.0),
            plugins_auto_enable=_choice(env, "VMEMLAB_PLUGINS_AUTO_ENABLE", ("builtin", "all", "none"), "builtin"),
            max_attempts=_count(env, "VMEMLAB_MAX_ATTEMPTS", 3),
            requeue_after_s=_number(env, "VMEMLAB_REQUEUE_AFTER_S", float, 300.0, low=1.0),
            broker_check_s=_number(env, "VMEMLAB_BROKER_CHECK_S", float, 2.0, low=0.1),
            worker_concurrency=(_count(env, "VMEMLAB_WORKER_CONCURRENCY", 1)
                                if _text(env, "VMEMLAB_WORKER_CONCURRENCY") else None),
            heartbeat_s=_number(env, "VMEMLAB_HEARTBEAT_S", float, 0.5, low=0.01),
            stale_heartbeats=_number(env, "VMEMLAB_STALE_HEARTBEATS", int, 60, low=2),
            run_time_limit_s=_number(env, "VMEMLAB_RUN_TIME_LIMIT_S", float, 0.0, low=0.0),
            sql_echo=_flag(env, "VMEMLAB_SQL_ECHO"),
            docs_ui_url=_docs_url(env),
            secret_key=_text(env, "VMEMLAB_SECRET_KEY"),
        )
        if 0 < settings.plugin_time_limit_s and settings.plugin_time_limit_s >= settings.stale_after_s:
            raise SettingsError(
                f"VMEMLAB_PLUGIN_TIME_LIMIT_S={settings.plugin_time_limit_s:g} must be shorter than the time after which "
                f"a run without heartbeat is taken for lost, {settings.stale_after_s:g} s (VMEMLAB_HEARTBEAT_S x "
                "VMEMLAB_STALE_HEARTBEATS): no heartbeat is written while a hook runs")
        return settings

    # --- derived -----------------------------------------------------------------------------

    @property
    def stale_after_s(self) -> float:
        """A running run whose heartbeat is older than this has lost its worker."""
        return self.heartbeat_s * self.stale_heartbeats

    @property
    def recovery_interval_s(self) -> float:
        """How often each worker looks for runs that lost their worker."""
        return max(self.stale_after_s / 2.0, 0.1)

    @property
    def broker_url(self) -> str:
        return self.redis_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def result_backend(self) -> str:
        return self.redis_url or f"db+sqlite:///{self.data_dir / 'results.db'}"

    @property
    def embedded_broker(self) -> bool:
        return self.redis_url is None

    def ensure_dirs(self) -> None:
        """Create the folders the embedded default writes to."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.trace_dir.mkdir(parents=True, exist_ok=True)


_current: Optional[Settings] = None


def get_settings() -> Settings:
    """The process's settings: read from the environment once, unless replaced by ``use_settings``."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def use_settings(settings: Optional[Settings]) -> None:
    """Replace the process's settings (tests, the CLI); ``None`` re-reads the environment next time."""
    global _current
    _current = settings


# --- parsing ---------------------------------------------------------------------------------

def _text(env: Mapping[str, str], name: str) -> Optional[str]:
    value = env.get(name, "").strip()
    return value or None


def _number(env: Mapping[str, str], name: str, kind: type, default, *, low):
    text = _text(env, name)
    if text is None:
        return default
    try:
        value = kind(text.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{name}={text!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if not value >= low or value != value:
        raise SettingsError(f"{name}={text!r}: must be at least {low}")
    return value


def _count(env: Mapping[str, str], name: str, default: int, high: Optional[int] = None) -> int:
    """A positive whole number, also written as ``5e10``."""
    value = _number(env, name, float, default, low=1)
    if value == float("inf") or not float(value).is_integer():
        raise SettingsError(f"{name}={_text(env, name)!r}: expected a whole number")
    if high is not None and value > high:
        raise SettingsError(f"{name}={_text(env, name)!r}: must be at most {high}")
    return int(value)


def _secret(env: Mapping[str, str], name: str) -> Optional[str]:
    text = _text(env, name)
    if text is None:
        return None
    if len(text) < 32 or any(c.isspace() for c in text):
        raise SettingsError(f"{name}: a token needs at least 32 characters and no spaces, e.g. "
                            "python3 -c 'import secrets; print(\"vml_\" + secrets.token_urlsafe(32))'")
    return text


def _docs_url(env: Mapping[str, str]) -> Optional[str]:
    text = _text(env, "VMEMLAB_DOCS_UI_URL")
    if text is None:
        return DEFAULT_DOCS_UI_URL
    return None if text.lower() == "off" else text


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    text = (_text(env, name) or ("1" if default else "0")).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={text!r}: expected 1/0, true/false, yes/no or on/off")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    text = (_text(env, name) or default).lower()
    if text not in choices:
        raise SettingsError(f"{name}={text!r}: expected one of {', '.join(choices)}")
    return text
