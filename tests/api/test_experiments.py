"""Experiments through HTTP: validation before anything is stored, references to stored
resources, idempotency keys, the broker down; then results: runs, series, comparisons, history,
the report page. Runs are executed in this process here (service.tasks.execute_run); the end to
end tests use real workers."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from service.tasks import execute_run

from .helpers import HOST, TEMPLATE, error_fields, experiment, pretty, write_trace

ROOT = Path(__file__).resolve().parents[2]


def _run_all(api, experiment_id: int) -> list[dict]:
    for run in api.get(f"/api/v1/experiments/{experiment_id}").get_json()["runs"]:
        assert execute_run(run["id"], worker="test") == "succeeded"
    return api.get(f"/api/v1/experiments/{experiment_id}").get_json()["runs"]


def test_create_then_results(api, tmp_path):
    host = api.create("/api/v1/hosts", {"name": "h", "spec": HOST})
    template = api.create("/api/v1/vm-templates", {"name": "t", "spec": TEMPLATE})
    raw = write_trace(tmp_path / "t.gz").read_bytes()
    trace = api.client.post("/api/v1/traces?name=t", data=raw, content_type="application/octet-stream").get_json()
    doc = experiment(host_id=host["id"], template_id=template["id"], trace_id=trace["id"],
                     policies=("static", "esx", "dynamic-memory"))
    created = api.post("/api/v1/experiments", doc)
    assert created.status_code == 201, pretty(created)
    exp = created.get_json()
    assert created.headers["Location"].endswith(f"/api/v1/experiments/{exp['id']}")
    assert exp["status"] == "queued" and exp["progress"] == 0
    assert [r["policy_name"] for r in exp["runs"]] == ["static", "esx", "dynamic-memory"]
    assert all(r["status"] == "queued" for r in exp["runs"])
    assert exp["scenario"]["host"]["memory_mb"] == 512 and exp["scenario"]["vms"][1]["memory_mb"] == 256
    assert exp["scenario"]["vms"][1]["workload"]["phases"][0]["trace"] == trace["sha256"]

    runs = _run_all(api, exp["id"])
    assert all(r["status"] == "succeeded" and r["progress"] == 1 for r in runs)
    listed = api.get("/api/v1/experiments").get_json()
    assert listed[0]["id"] == exp["id"] and listed[0]["status"] == "succeeded"

    run = api.get(f"/api/v1/runs/{runs[1]['id']}").get_json()
    assert run["policy_name"] == "esx" and run["worker"] == "test" and run["seed"] == 3 and run["attempts"] == 1
    assert run["engine_version"] and run["policy_version"] and len(run["fingerprint"]) == 64
    assert run["params"]["idle_tax_pct"] == 75.0 and run["summary"]["vms"][0]["name"] == "a"
    assert run["metrics"]["slowdown"] == run["summary"]["slowdown"] and run["wall_s"] >= 0
    assert run["started_at"] and run["finished_at"] and run["error"] is None

    series = api.get(f"/api/v1/runs/{run['id']}/series").get_json()
    assert series["epochs"] == 4 and set(series["series"]["vms"]) == {"a", "b"}
    assert len(series["series"]["host"]["used_mb"]) == 4 and isinstance(series["events"], list)
    download = api.get(f"/api/v1/runs/{run['id']}/series?format=csv")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert len(rows) == 4 * 2 and {r["vm"] for r in rows} == {"a", "b"}
    assert {"epoch", "time_s", "resident_mb", "ballooned_mb", "host_swapped_mb", "host_used_mb", "host_free_mb"} \
        <= set(rows[0])
    assert float(rows[0]["host_used_mb"]) == series["series"]["host"]["used_mb"][0]
    assert "format" in error_fields(api.get(f"/api/v1/runs/{run['id']}/series?format=xml"), "query")

    comparison = api.get(f"/api/v1/experiments/{exp['id']}/comparison").get_json()
    assert comparison["baseline"]["policy"] == "static" and comparison["same_configuration"] is False
    esx = comparison["runs"][1]
    assert esx["policy"] == "esx" and esx["deltas"]["slowdown"] == pytest.approx(
        esx["metrics"]["slowdown"] - comparison["runs"][0]["metrics"]["slowdown"])
    against_esx = api.get(f"/api/v1/experiments/{exp['id']}/comparison?baseline=esx").get_json()
    assert against_esx["baseline"]["policy"] == "esx"
    assert "baseline" in error_fields(api.get(f"/api/v1/experiments/{exp['id']}/comparison?baseline=kvm"), "query")

    report = api.get(f"/experiments/{exp['id']}/report")
    page = report.get_data(as_text=True)
    assert report.status_code == 200 and report.mimetype == "text/html"
    refused = [(r["policy_name"], vm["name"]) for r in api.get(f"/api/v1/experiments/{exp['id']}").get_json()["runs"]
               for vm in api.get(f"/api/v1/runs/{r['id']}").get_json()["summary"]["vms"] if vm["state"] == "refused"]
    assert refused         # a host chart per run, a chart per VM that ran; a refused VM gets why, not an empty chart
    assert page.count("<svg") == 3 * 3 - len(refused) and "dynamic-memory" in page and "http-equiv" not in page
    assert all(f"<b>VM {vm} was refused</b>" in page for _, vm in refused)
    assert "<script" not in page and "stylesheet" not in page
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        assert ElementTree.fromstring(svg).tag.endswith("svg")      # well-formed
    assert api.get("/experiments/999/report").status_code == 404


def test_history_filters_and_sorting(api):
    first = api.create("/api/v1/experiments", experiment(policies=("static", "esx", "overcommit")))
    second = api.create("/api/v1/experiments", experiment(policies=("static", "kvm"), seed=4))
    runs = _run_all(api, first["id"]) + _run_all(api, second["id"])
    all_ids = {r["id"] for r in runs}

    def ids(query: str) -> list[int]:
        response = api.get(f"/api/v1/runs?{query}")
        assert response.status_code == 200, pretty(response)
        return [r["id"] for r in response.get_json()]

    assert set(ids("")) == all_ids
    assert ids("policy=static&sort=id") == [runs[0]["id"], runs[3]["id"]]
    assert set(ids(f"experiment_id={second['id']}")) == {r["id"] for r in runs[3:]}
    assert ids("status=queued") == [] and set(ids("status=succeeded")) == all_ids
    esx = api.get(f"/api/v1/runs/{runs[1]['id']}").get_json()
    assert ids(f"fingerprint={esx['fingerprint']}") == [esx["id"]]
    assert ids(f"plugin_version={esx['policy_version']}&policy=esx") == [esx["id"]]
    assert set(ids("seed=4")) == {r["id"] for r in runs[3:]}
    assert set(ids("created_after=2000-01-01T00:00:00Z")) == all_ids and ids("created_before=2000-01-01") == []

    slowdowns = [api.get(f"/api/v1/runs/{i}").get_json()["metrics"]["slowdown"] for i in ids("sort=-slowdown")]
    assert slowdowns == sorted(slowdowns, reverse=True)
    peaks = [r["metrics"]["peak_used_mb"] for r in api.get("/api/v1/runs?sort=peak_used_mb").get_json()]
    assert peaks == sorted(peaks)
    page = api.get("/api/v1/runs?page_size=2&page=2&sort=id")
    assert [r["id"] for r in page.get_json()] == sorted(all_ids)[2:4]
    assert json.loads(page.headers["X-Pagination"])["total"] == 5

    for query, field in [("status=done", "status"), ("sort=-speed", "sort"), ("created_after=yesterday",
                         "created_after"), ("host_id=x", "host_id"), ("polcy=esx", "polcy")]:
        assert field in error_fields(api.get(f"/api/v1/runs?{query}"), "query"), query

    across = api.get(f"/api/v1/comparisons?runs={runs[1]['id']},{runs[4]['id']},{runs[0]['id']}"
                     f"&baseline_run={runs[0]['id']}").get_json()
    assert [r["run_id"] for r in across["runs"]] == [runs[1]["id"], runs[4]["id"], runs[0]["id"]]
    assert across["baseline"]["run_id"] == runs[0]["id"] and across["runs"][2]["is_baseline"]
    assert across["runs"][0]["vms"]["a"]["slowdown_delta"] is not None
    assert "runs" in error_fields(api.get("/api/v1/comparisons?runs=1,999"), "query")
    assert "runs[0]" in error_fields(api.get("/api/v1/comparisons?runs=a,b"), "query")
    assert "runs" in error_fields(api.get("/api/v1/comparisons"), "query")
    assert "baseline_run" in error_fields(api.get(f"/api/v1/comparisons?runs={runs[1]['id']}&baseline_run="
                                                  f"{runs[0]['id']}"), "query")


def test_a_scenario_file_can_be_posted_as_it_is(api):
    doc = json.loads((ROOT / "scenarios" / "seed.json").read_text())
    created = api.post("/api/v1/experiments", doc)
    assert created.status_code == 201, pretty(created)
    assert [r["policy_name"] for r in created.get_json()["runs"]] == [p["name"] for p in doc["policies"]]


def test_bad_experiments_name_the_field_and_store_nothing(api, counts):
    host = api.create("/api/v1/hosts", {"name": "h", "spec": HOST})
    before = counts()
    good = experiment()
    bad_vm = experiment()
    bad_vm["vms"][1]["memory_mb"] = -5
    bad_phase = experiment()
    bad_phase["vms"][0]["workload"]["phases"][0]["kind"] = "random"
    cases = [
        (bad_vm, "vms[1].memory_mb"),
        (bad_phase, "vms[0].workload.phases[0].kind"),
        ({**good, "colour": "blue"}, "colour"),
        ({**good, "policies": [{"name": "static"}, {"name": "no-such"}]}, "policies[1].name"),
        ({**good, "policies": [{"name": "esx", "params": {"idle_tax_pct": 500}}]}, "policies[0].params.idle_tax_pct"),
        ({**good, "policies": [{"name": "esx", "params": {"bogus": 1}}]}, "policies[0].params.bogus"),
        ({**good, "policies": [{"name": "esx"}],
          "policy_events": [{"at_s": 1, "policy": "esx", "params": {"idle_tax_pct": 500}}]},
         "policy_events[0].params.idle_tax_pct"),
        ({**good, "policy_events": [{"at_s": 1, "policy": "no-such", "params": {"x": 1}}]}, "policy_events[0].policy"),
        ({**good, "policy_events": [{"at_s": 1e9, "policy": "esx", "params": {"idle_tax_pct": 5}}]},
         "policy_events[0].at_s"),
        (experiment(host_id=999), "host_id"),
        (experiment(host_id=2**63), "host_id"),                  # past any row id: 422, not a 500
        (experiment(template_id=2**64), "vms[0].template_id"),
        ({**experiment(host_id=host["id"]), "host": HOST}, "host_id"),
        (experiment(template_id=999), "vms[0].template_id"),
        (experiment(trace_id=999), "vms[1].workload.phases[0].trace_id"),
        ({k: v for k, v in good.items() if k != "duration_s"}, "duration_s"),
        ([good], "(document)"),
    ]
    for doc, field in cases:
        response = api.post("/api/v1/experiments", doc)
        assert response.status_code == 422, (field, pretty(response))
        assert field in error_fields(response), (field, pretty(response))
        assert field in response.get_json()["message"]
    assert api.client.post("/api/v1/experiments", data="{", content_type="application/json").status_code == 400
    assert api.client.post("/api/v1/experiments", data="x", content_type="text/plain").status_code == 415
    long_key = api.post("/api/v1/experiments", good, headers={"Idempotency-Key": "k" * 201})
    assert "Idempotency-Key" in error_fields(long_key, "headers")
    too_big = api.client.post("/api/v1/experiments", data=b"[" + b" " * (17 * 2**20) + b"]",
                              content_type="application/json")
    assert too_big.status_code == 413
    assert counts() == before


def test_idempotency_key(api, counts):
    doc = experiment()
    headers = {"Idempotency-Key": "create-once-7"}
    first = api.post("/api/v1/experiments", doc, headers=headers)
    assert first.status_code == 201
    stored = counts()
    replay = api.post("/api/v1/experiments", doc, headers=headers)
    assert replay.status_code == 200 and replay.get_json()["id"] == first.get_json()["id"]
    assert replay.get_json()["idempotency_key"] == "create-once-7"
    other = api.post("/api/v1/experiments", experiment(seed=9), headers=headers)
    assert other.status_code == 409 and "create-once-7" in other.get_json()["message"]
    assert counts() == stored
    assert api.post("/api/v1/experiments", doc).status_code == 201     # no key: a new experiment


def test_cancel_and_delete(api, counts):
    before = counts()
    exp = api.create("/api/v1/experiments", experiment(policies=("static", "esx")))
    static, esx = exp["runs"]
    cancelled = api.post(f"/api/v1/runs/{static['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.get_json()["status"] == "cancelled"
    assert api.post(f"/api/v1/runs/{static['id']}/cancel").status_code == 409
    assert api.post("/api/v1/runs/999/cancel").status_code == 404
    assert execute_run(static["id"], worker="test") == "skipped"
    assert api.get(f"/api/v1/runs/{esx['id']}/series").status_code == 409
    assert api.get(f"/api/v1/experiments/{exp['id']}").get_json()["status"] == "running"
    assert execute_run(esx["id"], worker="test") == "succeeded"
    assert api.get(f"/api/v1/experiments/{exp['id']}").get_json()["status"] == "cancelled"
    page = api.get(f"/experiments/{exp['id']}/report").get_data(as_text=True)
    assert "Cancelled." in page and page.count("<svg") == 3

    assert api.delete(f"/api/v1/experiments/{exp['id']}").status_code == 204
    assert api.get(f"/api/v1/experiments/{exp['id']}").status_code == 404
    assert counts() == before


def test_broker_down_answers_503_and_keeps_nothing(make_app, counts):
    client = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    before = counts()
    response = client.post("/api/v1/experiments", json=experiment(), headers={"Idempotency-Key": "k1"})
    assert response.status_code == 503, pretty(response)
    assert "broker" in response.get_json()["message"] and response.headers["Retry-After"]
    assert counts() == before
    health = client.get("/api/v1/health")
    assert health.status_code == 503
    body = health.get_json()
    assert body["status"] == "unavailable" and body["database"]["ok"] and body["broker"]["ok"] is False
    assert body["broker"]["error"]
