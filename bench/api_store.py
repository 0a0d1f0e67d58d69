"""bench/api.py's data: the scenarios it posts and the finished runs it stores directly.

The stored runs are the seed scenario under the six built-in policies, inserted through
service.experiments and the models (no simulation): each run's summary is a real summary of that
policy (from a short simulation made once here) with its slowdowns and host figures scaled by a
random factor, so that sorting has something to sort.
"""
from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def store_runs(database_url: str, count: int, data_dir: Path) -> tuple[list[int], list[int], float]:
    """Insert ``count`` succeeded runs (experiments of the seed under the six policies, the last
    one possibly with fewer); returns the experiment ids, the run ids and the seconds it took."""
    from service import db
    from service.experiments import create_experiment
    from service.models import RunSeries, RunStatus, utcnow
    from service.models.runs import metrics_from_summary
    from service.tasks import json_safe
    from service.settings import Settings, use_settings

    started = time.perf_counter()
    settings = Settings(data_dir=data_dir, database_url=database_url)
    use_settings(settings)
    db.upgrade(database_url)
    templates = template_summaries()
    base = json.loads(SEED.read_text())
    experiment_ids = []
    run_ids = []
    made = 0
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
                run.summary = json_safe(summary)
                for column, value in metrics_from_summary(run.summary).items():
                    setattr(run, column, value)
            session.flush()
            for run in experiment.runs:
                _, series, events = templates[run.policy_name]
                session.add(RunSeries.pack(run.id, series, json_safe(events)))
            experiment_ids.append(experiment.id)
            run_ids += [run.id for run in experiment.runs]
            made += len(policies)
            if len(experiment_ids) % 20 == 0:
                session.commit()
        session.commit()
    finally:
        session.close()
        db.dispose_engines()
        use_settings(None)
    return experiment_ids, run_ids, time.perf_counter() - started
