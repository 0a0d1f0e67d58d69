"""Sweeps and capacity searches through HTTP on PostgreSQL and Redis with two real Celery workers:
the points spread over both workers, a SIGKILLed worker loses no point, cancel stops the rest, the
CSV says what the JSON says, and a capacity search is carried probe by probe by the workers to the
answer the search in one process gives."""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from service.capacity import SLA, capacity_search
from service.cli import main
from service.models import METRIC_COLUMNS
from service.policies import load_policy
from service.scenario import load_scenario
from tests.service.helpers import busy, tiny

from .test_end_to_end import _full_stack

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def _until(predicate, timeout: float, what: str, workers) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{workers.output()}")
        time.sleep(0.2)


def _runs(http, sweep_id: int) -> list[dict]:
    rows = http.json("GET", f"/api/v1/sweeps/{sweep_id}/results", 200)["results"]
    return [http.json("GET", f"/api/v1/runs/{row['run_id']}", 200) for row in rows]


def test_a_sweep_on_two_workers_survives_a_killed_worker_and_cancels(postgres_migrated: str, tmp_path: Path):
    # a worker is taken for dead 6 s after its last heartbeat
    with _full_stack(postgres_migrated, tmp_path, VMEMLAB_STALE_HEARTBEATS="30") as (http, workers):
        first, _ = workers.start("w1"), workers.start("w2")
        body = {"name": "zipf by seed", "scenario": busy(6.0),
                "axes": [{"path": "vms[db].workload.phases[0].zipf_s", "values": [0.8, 0.9, 1.0, 1.1]},
                         {"path": "seed", "values": [1, 2]}]}
        sweep = http.json("POST", "/api/v1/sweeps", 202, body, headers={"Idempotency-Key": "e2e-sweep"})
        assert sweep["runs_total"] == 8

        def w1_busy_after_a_point() -> bool:
            runs = _runs(http, sweep["id"])
            done_by = {r["worker"].split("@")[0] for r in runs if r["status"] == "succeeded"}
            return {"w1", "w2"} <= done_by and any(r["status"] == "running" and r["worker"].startswith("w1@")
                                                  and r["progress"] > 0.05 for r in runs)

        _until(w1_busy_after_a_point, 120, "both workers to finish a point and w1 to be in another", workers)
        killed = next(r["id"] for r in _runs(http, sweep["id"])
                      if r["status"] == "running" and r["worker"].startswith("w1@"))
        workers.kill(first)
        _until(lambda: http.json("GET", f"/api/v1/sweeps/{sweep['id']}", 200)["status"] != "running", 180,
               "the sweep to end on the surviving worker", workers)
        done = http.json("GET", f"/api/v1/sweeps/{sweep['id']}", 200)
        assert done["status"] == "succeeded" and done["runs_by_status"] == {"succeeded": 8}, workers.output()
        runs = {r["id"]: r for r in _runs(http, sweep["id"])}
        assert runs[killed]["attempts"] == 2 and runs[killed]["worker"].startswith("w2@")
        assert {r["worker"].split("@")[0] for r in runs.values()} == {"w1", "w2"}
        for run in runs.values():                      # each point's series stored once
            assert http.json("GET", f"/api/v1/runs/{run['id']}/series", 200)["epochs"] > 0

        rows = done["results"]
        status, _, raw = http.call("GET", f"/api/v1/sweeps/{sweep['id']}/results?format=csv")
        table = list(csv.DictReader(io.StringIO(raw.decode())))
        assert status == 200 and len(table) == len(rows) == 8
        for line, row in zip(table, rows):
            assert float(line["vms[db].workload.phases[0].zipf_s"]) == row["point"]["vms[db].workload.phases[0].zipf_s"]
            assert int(line["seed"]) == row["point"]["seed"] and int(line["run_id"]) == row["run_id"]
            for metric in METRIC_COLUMNS:
                value = row["metrics"][metric]
                assert (line[metric] == "" if value is None else float(line[metric]) == value), metric
        # the axis reached the workload: a steeper Zipf curve touches fewer distinct pages in 6 s
        peak = {(row["point"]["vms[db].workload.phases[0].zipf_s"], row["point"]["seed"]): row["metrics"]["peak_used_mb"]
                for row in rows}
        assert all(peak[1.1, seed] < peak[1.0, seed] < peak[0.9, seed] < peak[0.8, seed] for seed in (1, 2)), peak

        # cancel: a second sweep stopped once a run is going; nothing is left queued or running
        second = http.json("POST", "/api/v1/sweeps", 202, {**body, "name": "to cancel"})
        _until(lambda: any(r["status"] == "running" for r in _runs(http, second["id"])), 60,
               "a point of the second sweep to start", workers)
        http.json("POST", f"/api/v1/sweeps/{second['id']}/cancel", 202)
        _until(lambda: http.json("GET", f"/api/v1/sweeps/{second['id']}", 200)["runs_by_status"].keys()
               <= {"succeeded", "cancelled"}, 60, "the second sweep's runs to stop", workers)
        stopped = http.json("GET", f"/api/v1/sweeps/{second['id']}", 200)
        assert stopped["status"] == "cancelled" and stopped["runs_by_status"]["cancelled"] >= 6, stopped


def test_a_capacity_search_carried_by_the_workers(postgres_migrated: str, tmp_path: Path, capsys):
    scenario = tiny(policies=("static", "esx"), duration_s=2.0)
    scenario["vms"] = scenario["vms"][:1]
    scenario["host"]["memory_mb"] = 1024
    with _full_stack(postgres_migrated, tmp_path) as (http, workers):
        workers.start("w1"), workers.start("w2")
        search = http.json("POST", "/api/v1/capacity-searches", 202,
                           {"scenario": scenario, "vm": "a", "sla": {"max_slowdown": 3.0}, "max_count": 12})
        _until(lambda: http.json("GET", f"/api/v1/capacity-searches/{search['id']}", 200)["status"] != "running",
               180, "the search to end", workers)
        done = http.json("GET", f"/api/v1/capacity-searches/{search['id']}", 200)

        # the same workers take a sweep sent with the CLI, which waits and prints its table
        path = tmp_path / "tiny.json"
        path.write_text(json.dumps(tiny(policies=("static", "esx"))))
        capsys.readouterr()
        code = main(["submit", str(path), "--sweep", "--axis", "host.memory_mb=384,640", "--wait",
                     "--url", http.base, "--token", http.token])
        out, err = capsys.readouterr()
        assert code == 0, (out, err, workers.output())
        rows = [line.split() for line in out.splitlines() if line.strip().startswith(("384", "640"))]
        assert [(r[0], r[1]) for r in rows] == [("384", "static"), ("384", "esx"), ("640", "static"),
                                                ("640", "esx")], out
    assert done["status"] == "succeeded", (done, workers.output())
    loaded, _ = load_scenario(scenario)
    for result in done["results"]:
        local = capacity_search(loaded, "a", load_policy(result["policy"]), {}, SLA(3.0), 12)
        assert (result["count"], result["limited_by"]) == (local.count, local.limited_by), result
        assert [(p["count"], p["ok"]) for p in result["probes"]] == [(p.count, p.ok) for p in local.probes]
        assert all(p["run"] for p in result["probes"])
    assert done["answer"].startswith("On this 1 GB host at <= 3x slowdown, copies of a that fit: static 3, esx ")
