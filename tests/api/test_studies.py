"""Sweeps and capacity searches through HTTP, on SQLite and PostgreSQL: validation that names the
axis or field, nothing stored on a refusal, idempotency, results as JSON and CSV, cancel, reports,
and a capacity search driven to its end the way the workers drive it (runs executed here, then
``advance_and_enqueue`` as the worker calls it). The end-to-end tests use real workers."""
from __future__ import annotations

import csv
import io
import json
import threading

from service.capacity import SLA, capacity_search
from service import capacity_searches
from service.capacity_searches import advance_and_enqueue
from service.models import METRIC_COLUMNS
from service.policies import load_policy
from service.scenario import load_scenario
from service.tasks import execute_run

from .helpers import error_fields, experiment, pretty


def _sweep_body(**changes):
    body = {"name": "by host", "scenario": experiment(policies=("static", "esx")),
            "axes": [{"path": "host.memory_mb", "values": [384, 640]},
                     {"path": "policies[esx].params.idle_tax_pct", "start": 0, "stop": 75, "step": 75}]}
    body.update(changes)
    return body


def test_sweep_points_are_runs_and_results_match_csv(api):
    response = api.post("/api/v1/sweeps", _sweep_body(), headers={"Idempotency-Key": "sweep-1"})
    assert response.status_code == 202, pretty(response)
    sweep = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/sweeps/{sweep['id']}")
    assert sweep["points"] == 4 and sweep["runs_total"] == 8 and sweep["runs_by_status"] == {"queued": 8}
    assert [a["values"] for a in sweep["axes"]] == [[384, 640], [0, 75]]

    replay = api.post("/api/v1/sweeps", _sweep_body(), headers={"Idempotency-Key": "sweep-1"})
    assert replay.status_code == 200 and replay.get_json()["id"] == sweep["id"]
    conflict = api.post("/api/v1/sweeps", _sweep_body(name="other"), headers={"Idempotency-Key": "sweep-1"})
    assert conflict.status_code == 409

    rows = sweep["results"]
    assert [(r["point"]["host.memory_mb"], r["point"]["policies[esx].params.idle_tax_pct"], r["policy"])
            for r in rows] == [(m, t, p) for m in (384, 640) for t in (0, 75) for p in ("static", "esx")]
    for row in rows:                  # the axis reached the experiment and the policy's parameters
        exp = api.get(f"/api/v1/experiments/{row['experiment_id']}").get_json()
        assert exp["scenario"]["host"]["memory_mb"] == row["point"]["host.memory_mb"]
        if row["policy"] == "esx":
            assert row["params"]["idle_tax_pct"] == row["point"]["policies[esx].params.idle_tax_pct"]
        assert execute_run(row["run_id"], worker="test") == "succeeded"
    runs = api.get(f"/api/v1/runs?experiment_id={rows[0]['experiment_id']}").get_json()
    assert {r["id"] for r in runs} == {r["run_id"] for r in rows[:2]}     # ordinary runs

    done = api.get(f"/api/v1/sweeps/{sweep['id']}").get_json()
    assert done["status"] == "succeeded" and done["progress"] == 1
    assert done["answer"].startswith("Sweep of host.memory_mb, policies[esx].params.idle_tax_pct over 4 points x 2 "
                                     "policies, worst slowdown: static ")
    # the smaller host refuses a VM under static: a result, not an error
    static_small = next(r for r in done["results"] if r["policy"] == "static" and r["point"]["host.memory_mb"] == 384)
    assert static_small["metrics"]["vms_refused"] == 1

    as_json = api.get(f"/api/v1/sweeps/{sweep['id']}/results").get_json()["results"]
    text = api.get(f"/api/v1/sweeps/{sweep['id']}/results?format=csv").get_data(as_text=True)
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == len(as_json) == 8
    for line, row in zip(table, as_json):
        assert int(line["host.memory_mb"]) == row["point"]["host.memory_mb"]
        assert int(line["run_id"]) == row["run_id"] and line["policy"] == row["policy"]
        assert json.loads(line["params"]) == row["params"] and line["status"] == row["status"]
        assert line["error"] == (row["error"] or "") and line["policy_version"] == row["policy_version"]
        for metric in METRIC_COLUMNS:
            value = row["metrics"][metric]
            assert (line[metric] == "" if value is None else float(line[metric]) == value), metric

    page = api.get(f"/sweeps/{sweep['id']}/report")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert done["answer"].split(":")[0] in html and "slowdown against host.memory_mb" in html
    listed = api.get("/api/v1/sweeps").get_json()
    assert [s["id"] for s in listed] == [sweep["id"]] and listed[0]["status"] == "succeeded"


def test_sweep_errors_name_the_axis_and_store_nothing(api, counts):
    before = counts()
    cases = {
        "axes[0]": [{"path": "vms[nope].memory_mb", "values": [1]}],
        "axes[1]": [{"path": "host.memory_mb", "values": [512]}, {"path": "vms[a].memory_mb", "values": [256, -5]}],
        "axes[0] ": [{"path": "host..memory_mb", "values": [1]}],
        "axes": [],
    }
    for key, axes in cases.items():
        response = api.post("/api/v1/sweeps", _sweep_body(axes=axes))
        assert response.status_code == 422, pretty(response)
        errors = error_fields(response)
        assert key.strip() in errors, errors
    bad_value = api.post("/api/v1/sweeps", _sweep_body(axes=[{"path": "vms[a].memory_mb", "values": [256, -5]}]))
    message = error_fields(bad_value)["axes[0]"][0]
    assert message.startswith("vms[a].memory_mb=-5: vms[0].memory_mb:"), message
    policy_axis = api.post("/api/v1/sweeps", _sweep_body(axes=[{"path": "policies[kvm].params.x", "values": [1]}]))
    assert "no entry named 'kvm'" in error_fields(policy_axis)["axes[0]"][0]
    bad_param = api.post("/api/v1/sweeps", _sweep_body(axes=[{"path": "policies[esx].params.idle_tax_pct",
                                                                "values": [50, 500]}]))
    assert "axes[0]" in error_fields(bad_param), pretty(bad_param)
    too_many = api.post("/api/v1/sweeps", _sweep_body(axes=[{"path": "seed", "start": 1, "stop": 2000, "step": 1}]))
    assert "VMEMLAB_MAX_SWEEP_RUNS" in error_fields(too_many)["axes"][0]
    assert counts() == before


def test_sweep_cancel_stops_the_rest(api):
    sweep = api.post("/api/v1/sweeps", _sweep_body()).get_json()
    first = sweep["results"][0]["run_id"]
    assert execute_run(first, worker="test") == "succeeded"
    cancelled = api.post(f"/api/v1/sweeps/{sweep['id']}/cancel")
    assert cancelled.status_code == 202
    body = cancelled.get_json()
    assert body["runs_by_status"] == {"succeeded": 1, "cancelled": 7} and body["status"] == "cancelled"
    assert execute_run(sweep["results"][1]["run_id"], worker="test") != "succeeded"
    assert api.delete(f"/api/v1/sweeps/{sweep['id']}").status_code == 204
    assert api.get(f"/api/v1/experiments/{sweep['results'][0]['experiment_id']}").status_code == 404
    assert api.get(f"/api/v1/runs/{first}").status_code == 404


def _capacity_body(**changes):
    scenario = experiment(policies=("static", "esx"), duration_s=2.0)
    scenario["vms"] = scenario["vms"][:1]
    scenario["host"]["memory_mb"] = 1024
    body = {"scenario": scenario, "vm": "a", "sla": {"max_slowdown": 3.0}, "max_count": 12}
    body.update(changes)
    return body


def _drive(api, app, search_id: int) -> dict:
    """Run the search's probes here, each followed by what a worker does after a run."""
    celery = app.extensions["vmemlab"].celery
    for _ in range(60):
        search = api.get(f"/api/v1/capacity-searches/{search_id}").get_json()
        if search["status"] != "running":
            return search
        queued = [r for r in api.get("/api/v1/runs?status=queued&page_size=100").get_json()]
        assert queued, search
        for run in queued:
            execute_run(run["id"], worker="test")
            advance_and_enqueue(celery, run_id=run["id"])
    raise AssertionError("the search did not end")


def test_capacity_search_over_http_equals_the_search_in_process(api, app, settings):
    response = api.post("/api/v1/capacity-searches", _capacity_body(), headers={"Idempotency-Key": "cap-1"})
    assert response.status_code == 202, pretty(response)
    search = response.get_json()
    assert search["status"] == "running" and [r["policy"] for r in search["results"]] == ["static", "esx"]
    done = _drive(api, app, search["id"])
    assert done["status"] == "succeeded" and done["finished_at"]

    body = _capacity_body()
    scenario, _ = load_scenario(body["scenario"])
    for result in done["results"]:
        local = capacity_search(scenario, "a", load_policy(result["policy"]), {}, SLA(3.0), 12)
        assert (result["count"], result["limited_by"]) == (local.count, local.limited_by), result
        assert [(p["count"], p["ok"]) for p in result["probes"]] == [(p.count, p.ok) for p in local.probes]
        for probe in result["probes"]:          # each probe is a stored run with that many copies
            run = api.get(f"/api/v1/runs/{probe['run']}").get_json()
            exp = api.get(f"/api/v1/experiments/{run['experiment_id']}").get_json()
            assert [vm["name"] for vm in exp["scenario"]["vms"]] == [f"a-{i + 1}" for i in range(probe["count"])]
    static = done["results"][0]
    assert static["count"] == (1024 - 0) // (256 + 16) and static["limited_by"] == "refused"
    assert done["answer"].startswith(f"On this 1 GB host at <= 3x slowdown, copies of a that fit: static "
                                     f"{static['count']}, esx ")

    html = api.get(f"/capacity-searches/{search['id']}/report").get_data(as_text=True)
    assert "copies that fit" in html and "worst slowdown against copies" in html and "SLA 3x" in html

    later = api.post("/api/v1/capacity-searches", _capacity_body(sla={"max_slowdown": 1.01}))
    assert later.status_code == 202
    again = _drive(api, app, later.get_json()["id"])
    history = api.get(f"/api/v1/capacity-searches/{again['id']}/history").get_json()
    assert [o["id"] for o in history["others"]] == [search["id"]]
    by_policy = {p["policy"]: p for p in history["others"][0]["policies"]}
    mine = {r["policy"]: r["count"] for r in again["results"]}
    assert by_policy["esx"]["count_delta"] == mine["esx"] - by_policy["esx"]["count"]
    assert f'<a href="/capacity-searches/{search["id"]}/report">' in \
        api.get(f"/capacity-searches/{again['id']}/report").get_data(as_text=True)


def test_capacity_search_errors(api, counts):
    before = counts()
    for changes, field in [({"vm": "zz"}, "vm"), ({"sla": {"max_slowdown": 0.5}}, "sla.max_slowdown"),
                           ({"sla": {}}, "sla.max_slowdown"), ({"max_count": 100000}, "max_count"),
                           ({"sla": {"max_slowdown": 2, "speed": 1}}, "sla.speed"),
                           ({"scenario": {**_capacity_body()["scenario"], "duration_s": -1}}, "scenario.duration_s"),
                           ({"policies": [{"name": "nope"}]}, "policies[0].name")]:
        response = api.post("/api/v1/capacity-searches", _capacity_body(**changes))
        assert response.status_code == 422, pretty(response)
        assert field in error_fields(response), (field, pretty(response))
    assert counts() == before


def test_capacity_search_cancel(api, app):
    search = api.post("/api/v1/capacity-searches", _capacity_body()).get_json()
    cancelled = api.post(f"/api/v1/capacity-searches/{search['id']}/cancel").get_json()
    advance_and_enqueue(app.extensions["vmemlab"].celery)       # the recovery sweep sees it
    done = api.get(f"/api/v1/capacity-searches/{search['id']}").get_json()
    assert cancelled["status"] == "cancelled" and done["status"] == "cancelled" and done["finished_at"]
    assert all(r["status"] == "cancelled" and r["count"] is None for r in done["results"])


def test_capacity_search_replay_and_a_cancel_between_probes(api, app, counts):
    first = api.post("/api/v1/capacity-searches", _capacity_body(), headers={"Idempotency-Key": "cap-1"})
    assert first.status_code == 202
    search = first.get_json()
    replay = api.post("/api/v1/capacity-searches", _capacity_body(), headers={"Idempotency-Key": "cap-1"})
    assert replay.status_code == 200 and replay.get_json()["id"] == search["id"]
    conflict = api.post("/api/v1/capacity-searches", _capacity_body(max_count=5), headers={"Idempotency-Key": "cap-1"})
    assert conflict.status_code == 409 and "capacity search" in conflict.get_json()["message"]

    # every probe made so far has finished, but nobody advanced the search yet: a cancel now
    # must still stop it (the next advance adds nothing)
    queued = api.get("/api/v1/runs?status=queued&page_size=100").get_json()
    assert len(queued) == 2
    for run in queued:
        assert execute_run(run["id"], worker="test") == "succeeded"
    cancelled = api.post(f"/api/v1/capacity-searches/{search['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.get_json()["status"] == "cancelled"
    stored = counts()
    for run in queued:
        assert advance_and_enqueue(app.extensions["vmemlab"].celery, run_id=run["id"]) == []
    assert counts() == stored                       # no probe added
    done = api.get(f"/api/v1/capacity-searches/{search['id']}").get_json()
    assert done["status"] == "cancelled" and done["finished_at"]
    assert all(r["status"] == "cancelled" and len(r["probes"]) == 1 for r in done["results"])


def test_a_cancel_during_an_advance_waits_for_it_and_cancels_its_probe(api, app, monkeypatch):
    """An advance holds the search from its check until its new probe is stored: a cancel arriving
    in between waits, then sees that probe and cancels its runs (none is left queued to run after
    the cancel). SQLite ignores FOR UPDATE, so there it takes the database's write lock instead."""
    search = api.post("/api/v1/capacity-searches", _capacity_body()).get_json()
    queued = api.get("/api/v1/runs?status=queued&page_size=100").get_json()
    for run in queued:
        assert execute_run(run["id"], worker="test") == "succeeded"
    checked, release = threading.Event(), threading.Event()
    add_probe = capacity_searches._add_probe

    def slow_add_probe(*args, **kwargs):
        checked.set()                              # the search was read: not cancelled yet
        assert release.wait(30)
        return add_probe(*args, **kwargs)

    monkeypatch.setattr(capacity_searches, "_add_probe", slow_add_probe)
    added: list[int] = []
    advancing = threading.Thread(target=lambda: added.extend(capacity_searches.advance(search["id"])))
    advancing.start()
    assert checked.wait(30)
    cancel_answer: list = []
    cancelling = threading.Thread(target=lambda: cancel_answer.append(
        app.test_client().post(f"/api/v1/capacity-searches/{search['id']}/cancel")))
    cancelling.start()
    cancelling.join(1.0)
    waited = cancelling.is_alive()              # held off by the advance
    release.set()
    advancing.join(60)
    cancelling.join(60)
    assert waited and cancel_answer[0].status_code == 202
    assert added, "the advance added its probe before the cancel"
    runs = {run["id"]: run["status"] for run in api.get("/api/v1/runs?page_size=100").get_json()}
    assert all(runs[run_id] == "cancelled" for run_id in added), runs


def test_odd_input_is_refused_with_the_field_named(api, counts):
    before = counts()
    nan = api.client.post("/api/v1/sweeps", data='{"scenario": {}, "axes": [{"path": "seed", "values": [NaN]}]}',
                          content_type="application/json")
    assert nan.status_code == 400 and "NaN" in nan.get_json()["message"]
    huge = api.client.post("/api/v1/experiments", data='{"duration_s": 1e400}', content_type="application/json")
    assert huge.status_code == 400
    cases = [
        ("/api/v1/sweeps", _sweep_body(axes=[{"path": "vms[\u00b2].memory_mb", "values": [1]}]), "axes[0]"),
        ("/api/v1/sweeps", _sweep_body(axes=[{"path": "seed", "start": 0, "stop": 10 ** 401, "step": 1}]), "axes[0]"),
        ("/api/v1/sweeps", _sweep_body(axes=[{"path": "seed", "values": [1]}], scenario={**experiment(), "policies": 5}),
         "scenario.policies"),
        ("/api/v1/sweeps", _sweep_body(axes=[{"path": "seed", "values": [1]}],
                                       scenario={**experiment(), "policies": [{"name": "nope"}]}),
         "scenario.policies[0].name"),
        ("/api/v1/capacity-searches", _capacity_body(policies=5), "policies"),
        ("/api/v1/capacity-searches", _capacity_body(name="a\x00b"), "name"),
        ("/api/v1/capacity-searches", _capacity_body(sla={"max_slowdown": True}), "sla.max_slowdown"),
    ]
    for url, body, field in cases:
        response = api.post(url, body)
        assert response.status_code == 422, (field, pretty(response))
        assert field in error_fields(response), (field, pretty(response))
    assert counts() == before
    accepted = api.post("/api/v1/capacity-searches", _capacity_body(sla={"max_slowdown": 2,
                                                                         "max_blocked_fraction": None}))
    assert accepted.status_code == 202 and accepted.get_json()["sla"]["max_blocked_fraction"] == 0.05


def test_a_point_or_probe_goes_with_its_study(api):
    sweep = api.post("/api/v1/sweeps", _sweep_body()).get_json()
    point = sweep["results"][0]["experiment_id"]
    refused = api.delete(f"/api/v1/experiments/{point}")
    assert refused.status_code == 409 and f"sweep {sweep['id']}" in refused.get_json()["message"]
    search = api.post("/api/v1/capacity-searches", _capacity_body()).get_json()
    probe = max(e["id"] for e in api.get("/api/v1/experiments?page_size=100").get_json())
    refused = api.delete(f"/api/v1/experiments/{probe}")
    assert refused.status_code == 409 and f"capacity search {search['id']}" in refused.get_json()["message"]
