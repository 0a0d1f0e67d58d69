"""Many machines: Celery workers started as separate "machines" (each its own node name and its own
``VMEMLAB_DATA_DIR``), sharing only what the README's deployment section says must be shared:
the PostgreSQL database, the Redis broker and the trace storage (``VMEMLAB_TRACE_DIR``). A sweep
over a trace uploaded through the API runs across them: its points spread over every worker, a
worker killed mid-sweep loses nothing, and a worker with another version of a plugin refuses the
runs pinned to the version the API saw, with a message that says so."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service import db
from service.models import Run
from service.settings import Settings, use_settings
from tests.api.helpers import token_for, write_trace

from .conftest import truncate_all
from .redis_server import RedisServer
from .test_faults import _all_runs, _runs, _series_count, _wait
from .test_worker import ROOT, _environment, warm_engine  # noqa: F401  (warm_engine: an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

PLUGIN = "vmemlab_versioned_plugin"
PLUGIN_SOURCE = '''
from service.sdk import Policy


class Versioned(Policy):
    """Static allocation, as a third-party distribution at version {version}."""

    name = "versioned"
    version = "{version}"
    summary = "a third-party policy whose installed version differs between machines (tests)"
'''


def _plugin(folder: Path, version: str) -> Path:
    """An installed distribution of the ``versioned`` policy at ``version``, in ``folder``."""
    folder.mkdir(parents=True)
    (folder / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE.format(version=version))
    info = folder / f"{PLUGIN}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vmemlab-versioned-plugin\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[vmemlab.policies]\nversioned = {PLUGIN}:Versioned\n")
    return folder


class Machines:
    """Celery workers as separate machines: a node name and a data folder each; killed at the end."""

    def __init__(self, env: dict[str, str], root: Path):
        self.env, self.root = env, root
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, plugin: Path) -> subprocess.Popen:
        data = self.root / name
        data.mkdir()
        env = {**self.env, "VMEMLAB_DATA_DIR": str(data), "PYTHONPATH": str(plugin)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "service.celery_app", "worker", "--loglevel=INFO",
             "--concurrency=1", "-n", f"{name}@{name}-host", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=open(self.root / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL the worker and its pool, as a machine that goes away would."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def output(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in self.procs)

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(name)


def _machine(run: Run) -> str:
    return (run.worker or "").split("@", 1)[0]


@pytest.fixture
def cluster(postgres_migrated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PostgreSQL, a throwaway Redis, one shared trace folder; the API's settings (its own data
    folder) installed in this process, with the ``versioned`` plugin at 1.0 on its path."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    truncate_all(postgres_migrated)
    shared = tmp_path / "shared-traces"
    shared.mkdir()
    # stale after 8 s, swept every 4 s: a killed machine's run is taken over within about 12 s
    env = _environment(DATABASE_URL=postgres_migrated, REDIS_URL=redis_server.url, VMEMLAB_TRACE_DIR=str(shared),
                       VMEMLAB_HEARTBEAT_S="0.1", VMEMLAB_STALE_HEARTBEATS="80",
                       VMEMLAB_PLUGINS_AUTO_ENABLE="all")
    plugin_v1 = _plugin(tmp_path / "plugin-1.0", "1.0")
    plugin_v2 = _plugin(tmp_path / "plugin-2.0", "2.0")
    monkeypatch.syspath_prepend(str(plugin_v1))
    settings = Settings.from_env({**env, "VMEMLAB_DATA_DIR": str(tmp_path / "api")})
    settings.ensure_dirs()
    use_settings(settings)
    machines = Machines(env, tmp_path)
    try:
        yield settings, machines, plugin_v1, plugin_v2
    finally:
        machines.stop_all()
        redis_server.stop()
        use_settings(None)
        db.dispose_engines()
        sys.modules.pop(PLUGIN, None)


def test_a_sweep_runs_across_machines_and_survives_losing_one(cluster, tmp_path: Path):
    from service.app import create_app

    settings, machines, plugin_v1, plugin_v2 = cluster
    names = ("m1", "m2", "m3")
    for name in names:
        machines.start(name, plugin_v1)
    client = create_app(settings).test_client()
    auth = {"Authorization": f"Bearer {token_for(settings.database_url, 'admin', 'machines')}"}

    # the trace reaches the workers only through the shared trace storage
    uploaded = client.post("/api/v1/traces?name=shared", data=write_trace(tmp_path / "t.gz").read_bytes(),
                           headers={**auth, "Content-Type": "application/octet-stream"})
    assert uploaded.status_code == 201, uploaded.get_json()
    trace = uploaded.get_json()
    assert (tmp_path / "shared-traces" / trace["sha256"]).is_file()
    scenario = {
        "name": "across machines", "duration_s": 4, "epoch_s": 0.5, "seed": 5, "host": {"memory_mb": 4096},
        "vms": [{"name": "db", "memory_mb": 2048, "os_mb": 64,
                 "workload": {"phases": [{"kind": "zipf", "footprint_mb": 1500, "zipf_s": 0.9, "duration_s": 4,
                                          "compute_ns": 200}]}},
                {"name": "traced", "memory_mb": 256, "os_mb": 32,
                 "workload": {"phases": [{"kind": "trace", "trace_id": trace["id"], "trace_loops": 1000,
                                          "duration_s": 4}]}}]}
    sizes = [2048 + 512 * i for i in range(8)]
    _wait(lambda: all(f"{name}@{name}-host ready." in machines.log(name) for name in names), 90,
          "the three machines to be ready", machines.output)
    posted = client.post("/api/v1/sweeps", headers=auth, json={
        "name": "machines", "scenario": scenario, "axes": [{"path": "host.memory_mb", "values": sizes}],
        "policies": [{"name": "static"}, {"name": "versioned"}]})
    assert posted.status_code == 202, posted.get_json()
    sweep = posted.get_json()
    ids = [r.id for r in _all_runs()]
    assert len(ids) == 2 * len(sizes) and {r.policy_version for r in _all_runs() if r.policy_name == "versioned"} == {"1.0"}

    # m3 leaves mid-sweep, in the middle of a run (far from its end), after it has finished one
    def m3_busy() -> bool:
        runs = [r for r in _runs(ids) if _machine(r) == "m3"]
        return (any(r.status == "succeeded" for r in runs)
                and any(r.status == "running" and 0.02 < r.progress < 0.6 for r in runs))

    _wait(m3_busy, 90, "m3 to finish a run and start another", machines.output)
    machines.kill("m3")
    (orphan,) = [r.id for r in _runs(ids) if _machine(r) == "m3" and r.status == "running"]

    def finished() -> bool:
        return client.get(f"/api/v1/sweeps/{sweep['id']}").get_json()["status"] not in ("queued", "running")

    _wait(finished, 120, "the sweep to finish", machines.output)
    done = client.get(f"/api/v1/sweeps/{sweep['id']}").get_json()
    runs = _runs(ids)
    assert done["status"] == "succeeded" and done["runs_by_status"] == {"succeeded": len(ids)}, machines.output()
    assert all(_series_count(r.id) == 1 for r in runs)
    assert {_machine(r) for r in runs} == set(names), [(r.id, r.worker) for r in runs]   # every machine ran some
    taken_over = next(r for r in runs if r.id == orphan)
    assert taken_over.attempts == 2 and _machine(taken_over) in ("m1", "m2")
    assert all(r.attempts == 1 for r in runs if r.id != orphan), [(r.id, r.attempts) for r in runs]
    for name in names:                      # nothing of the trace in any machine's own data folder
        assert not any(p.is_file() for p in (tmp_path / name).rglob("*") if "traces" in p.parts), name
    assert "re-queued runs whose worker stopped heartbeating" in machines.output()

    # a machine with version 2.0 of the plugin refuses a run pinned to 1.0, and runs the others
    machines.kill("m1")
    machines.kill("m2")
    machines.start("m4", plugin_v2)
    experiment = client.post("/api/v1/experiments", headers=auth, json={**scenario, "policies": [
        {"name": "versioned"}, {"name": "static"}]})
    assert experiment.status_code == 201, experiment.get_json()
    pinned, plain = (r["id"] for r in experiment.get_json()["runs"])
    _wait(lambda: all(r.status not in ("queued", "running") for r in _runs([pinned, plain])), 90,
          "m4 to take the runs", machines.output)
    refused, ran = _runs([pinned, plain])
    assert ran.status == "succeeded" and _machine(ran) == "m4"
    assert refused.status == "failed" and refused.policy_version == "1.0" and refused.summary is None
    assert refused.error.startswith("worker m4@m4-host pid ") and (
        "has plugin versioned version 2.0, run needs 1.0; restart the workers after installing another version "
        "of a plugin") in refused.error, refused.error


def test_compose_workers_share_the_database_the_broker_and_the_trace_storage():
    """``docker compose up --scale worker=N``: every worker container gets the API's database,
    broker and trace folder, and a concurrency that its settings accept (empty: one per core)."""
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    api, worker = services["api"]["environment"], services["worker"]["environment"]
    for name in ("DATABASE_URL", "REDIS_URL", "VMEMLAB_TRACE_DIR"):
        assert worker[name] == api[name], name
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]   # scalable
    assert worker["VMEMLAB_WORKER_CONCURRENCY"] == "${VMEMLAB_WORKER_CONCURRENCY:-}"
    env = {**worker, "VMEMLAB_WORKER_CONCURRENCY": "", "VMEMLAB_ADMIN_TOKEN": "", "VMEMLAB_PLUGINS_AUTO_ENABLE": ""}
    parsed = Settings.from_env(env)
    assert parsed.worker_concurrency is None and str(parsed.trace_dir) == worker["VMEMLAB_TRACE_DIR"]
    assert Settings.from_env({**env, "VMEMLAB_WORKER_CONCURRENCY": "2"}).worker_concurrency == 2
