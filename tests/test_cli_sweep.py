"""``vmemlab sweep`` (a scenario over a grid of axes and policies, offline) and ``vmemlab submit
--sweep`` (the same posted to the service; here against a fake client, never a server)."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from service.cli import sweep as sweep_cli
from service.cli.submit import _sweep_submission, submit_sweep
from service.models.runs import METRIC_COLUMNS
from service.policies import load_policy

from .test_cli import assert_user_error, run, tiny_scenario, write_json


@pytest.fixture
def scenario_path(tmp_path) -> str:
    return write_json(tmp_path, tiny_scenario())


@pytest.fixture
def counted_runs(monkeypatch) -> list:
    """The runs made in this process (``--jobs 1``), each as ``(policy, params)``."""
    made: list = []
    real = sweep_cli.simulate_run

    def counting(scenario, policy, params):
        made.append((policy, params))
        return real(scenario, policy, params)

    monkeypatch.setattr(sweep_cli, "simulate_run", counting)
    return made


def sweep_json(capsys, *argv: str) -> list[dict]:
    code, out, err = run(capsys, "sweep", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_one_row_per_point_and_policy_in_point_order(scenario_path, capsys):
    code, out, err = run(capsys, "sweep", scenario_path, "--axis", "host.memory_mb=1024,2048",
                         "--axis", "vms[app].count=1,2", "--policy", "static", "--policy", "esx", "--json")
    assert code == 0, err
    rows = json.loads(out)
    expected = [({"host.memory_mb": host, "vms[app].count": count}, policy)
                for host in (1024, 2048) for count in (1, 2) for policy in ("static", "esx")]
    assert [(r["point"], r["policy"]) for r in rows] == expected
    assert all(r["status"] == "succeeded" and r["error"] is None for r in rows)
    assert all(set(r["metrics"]) == set(METRIC_COLUMNS) and r["metrics"]["slowdown"] is not None for r in rows)
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert len(progress) == 8 and progress[-1].startswith("[8/8] ")
    assert "slowdown 1.00" in err


def test_the_number_of_processes_does_not_change_the_results(scenario_path, capsys):
    argv = [scenario_path, "--axis", "vms[app].memory_mb=256,512", "--axis", "host.memory_mb=512,1024",
            "--policy", "overcommit", "--policy", "esx", "--quiet", "--json"]
    one = run(capsys, "sweep", *argv, "--jobs", "1")
    two = run(capsys, "sweep", *argv, "--jobs", "2")
    assert one[0] == two[0] == 0
    assert one[1] == two[1] and one[1]
    assert one[2] == two[2] == ""


def test_a_policy_parameter_axis_changes_that_policy_only(scenario_path, capsys):
    rows = sweep_json(capsys, scenario_path, "--axis", "policies[esx].params.idle_tax_pct=0,50",
                      "--policy", "esx", "--policy", "overcommit", "--param", "overcommit.victim=fifo", "--quiet")
    esx_defaults = load_policy("esx").load_params({})
    overcommit = load_policy("overcommit").load_params({"victim": "fifo"})
    assert [(r["policy"], r["point"]) for r in rows] == [
        ("esx", {"policies[esx].params.idle_tax_pct": 0}), ("overcommit", {"policies[esx].params.idle_tax_pct": 0}),
        ("esx", {"policies[esx].params.idle_tax_pct": 50}), ("overcommit", {"policies[esx].params.idle_tax_pct": 50})]
    assert [r["params"] for r in rows if r["policy"] == "esx"] == [
        {**esx_defaults, "idle_tax_pct": 0}, {**esx_defaults, "idle_tax_pct": 50}]
    assert all(r["params"] == overcommit for r in rows if r["policy"] == "overcommit")


def test_a_range_axis_expands_to_its_values(scenario_path, capsys):
    rows = sweep_json(capsys, scenario_path, "--axis", "host.memory_mb=1024:2048:512", "--quiet")
    assert [r["point"]["host.memory_mb"] for r in rows] == [1024, 1536, 2048]
    assert [r["policy"] for r in rows] == ["static"] * 3           # no policy named: the static baseline
    assert [r["metrics"]["peak_used_mb"] for r in rows] == [rows[0]["metrics"]["peak_used_mb"]] * 3


def test_a_bad_path_is_a_usage_error_naming_the_axis_and_nothing_runs(scenario_path, capsys, counted_runs):
    code, out, err = run(capsys, "sweep", scenario_path, "--axis", "host.memory_mb=1024,2048",
                         "--axis", "vms[nope].count=1,2", "--jobs", "1")
    assert_user_error(code, err, "error: --axis vms[nope].count: no entry named 'nope' in vms (entries: app)")
    assert len(err.strip().splitlines()) == 1            # once, not once per point
    assert out == "" and counted_runs == []


def test_a_bad_value_is_a_usage_error_naming_the_axis_and_nothing_runs(scenario_path, capsys, counted_runs):
    code, out, err = run(capsys, "sweep", scenario_path, "--axis", "host.memory_mb=1024,0",
                         "--axis", "policies[static].params.nothing=1", "--jobs", "1")
    assert_user_error(code, err, "error: --axis host.memory_mb=0: host.memory_mb: ",
                      "error: --axis policies[static].params.nothing=1: policies[0].params.nothing: Unknown field")
    assert out == "" and counted_runs == []


def test_a_problem_no_axis_explains_names_the_point(tmp_path, capsys, counted_runs):
    path = write_json(tmp_path, tiny_scenario(memory_mb=900))
    code, _, err = run(capsys, "sweep", path, "--axis", "host.memory_mb=512,2048", "--jobs", "1")
    assert_user_error(code, err, "error: at host.memory_mb=512: vms[0].memory_mb: VM 'app' needs up to 900 MB")
    assert counted_runs == []


@pytest.mark.parametrize("axis, words", [
    ("host.memory_mb", "write PATH=V1,V2,... or PATH=START:STOP:STEP"),
    ("host.memory_mb=1:5:0", "--axis host.memory_mb=1:5:0: step must be positive"),
    ("host..memory_mb=1", "cannot read ''"),
])
def test_malformed_axes(scenario_path, capsys, axis, words):
    code, out, err = run(capsys, "sweep", scenario_path, "--axis", axis)
    assert_user_error(code, err, words)
    assert out == ""


def test_the_same_path_twice_and_no_axis_at_all(scenario_path, capsys):
    code, _, err = run(capsys, "sweep", scenario_path, "--axis", "seed=1", "--axis", "seed=2")
    assert_user_error(code, err, "--axis seed: given twice")
    code, _, err = run(capsys, "sweep", scenario_path)
    assert_user_error(code, err, "give at least one --axis")


def test_the_table_has_a_column_per_axis_under_the_answer(scenario_path, capsys):
    code, out, err = run(capsys, "sweep", scenario_path, "--axis", "host.memory_mb=512,1024",
                         "--axis", "vms[app].os_mb=32,64", "--policy", "static", "--policy", "esx", "--quiet")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == ("Worst mean slowdown over the sweep: static 1.00x at host.memory_mb=1024, vms[app].os_mb=32 "
                        "(a VM refused at 2 of 4 points); esx 1.00x at every point; best with every VM admitted: esx.")
    header = next(line for line in lines if "policy" in line)
    assert header.split()[:3] == ["host.memory_mb", "vms[app].os_mb", "policy"]
    for title in ("slowdown", "fairness", "peak", "refused", "blocked"):
        assert title in header
    rows = [line.split() for line in lines if line.split()[:1] in (["512"], ["1024"])]
    assert [row[:3] for row in rows] == [[h, o, p] for h in ("512", "1024") for o in ("32", "64")
                                         for p in ("static", "esx")]
    assert rows[0][3] == "-" and rows[0][-2:] == ["1", "0"]       # static refused the VM on 512 MB


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_policy_that_raises_fails_its_rows_not_the_sweep(scenario_path, capsys, hostile, jobs):
    code, out, err = run(capsys, "sweep", scenario_path, "--axis", "host.memory_mb=1024,2048",
                         "--policy", "hostile-hook-raises", "--policy", "static", "--jobs", jobs)
    assert code == 1
    assert "Traceback" not in err and "failed: " in err
    assert "Worst mean slowdown over the sweep: hostile-hook-raises -; static 1.00x at every point; " \
           "2 of 4 runs failed." in out
    assert "host.memory_mb=1024 hostile-hook-raises: " in out and "a hook bug (hostile test)" in out
    code, out, _ = run(capsys, "sweep", scenario_path, "--axis", "host.memory_mb=1024,2048", "--quiet",
                       "--policy", "hostile-hook-raises", "--policy", "static", "--jobs", jobs, "--json")
    rows = json.loads(out)
    assert [r["status"] for r in rows] == ["failed", "succeeded"] * 2
    assert "a hook bug" in rows[0]["error"] and rows[0]["metrics"]["slowdown"] is None


# --- submit --sweep, against a fake client ------------------------------------------------------------

def test_the_sweep_submission_body(tmp_path, capsys):
    path = write_json(tmp_path, {**tiny_scenario(), "policies": [{"name": "esx"}]})
    body = _sweep_submission(path, ["host.memory_mb=1024:2048:512", "vms[app].count=1,2"], [], [])
    assert body == {"name": "tiny", "scenario": json.loads(open(path).read()),
                    "axes": [{"path": "host.memory_mb", "values": [1024, 1536, 2048]},
                             {"path": "vms[app].count", "values": [1, 2]}]}
    body = _sweep_submission(path, ["seed=1"], ["kvm"], ["kvm.ksm=false"])
    assert body["policies"] == [{"name": "kvm", "params": {"ksm": False}}]
    code, _, err = run(capsys, "submit", path, "--axis", "seed=1")
    assert_user_error(code, err, "--axis needs --sweep")


class FakeSweepClient:
    def __init__(self, results: list[dict]):
        self.posted: list[dict] = []
        self.polls = 0
        self.results = results

    def create_sweep(self, body):
        self.posted.append(body)
        return {"id": 7, "status": "queued", "progress": 0.0, "runs_total": len(self.results),
                "runs_by_status": {"queued": len(self.results)},
                "links": {"self": "/api/v1/sweeps/7", "results": "/api/v1/sweeps/7/results",
                          "report": "/sweeps/7/report", "cancel": "/api/v1/sweeps/7/cancel"}}

    def sweep(self, sweep_id):
        self.polls += 1
        done = self.polls >= 2
        return {"id": sweep_id, "status": "succeeded" if done else "running", "progress": 1.0 if done else 0.5,
                "runs_by_status": {"succeeded": len(self.results)} if done else {"running": 1}, "links": {}}

    def sweep_results(self, sweep):
        assert sweep["id"] == 7 and sweep["links"]["results"] == "/api/v1/sweeps/7/results"
        return self.results

    def link_url(self, link):
        return "http://sim:8000" + link


def test_submit_sweep_waits_and_prints_the_offline_table(scenario_path, capsys):
    offline = sweep_json(capsys, scenario_path, "--axis", "host.memory_mb=512,1024", "--quiet")
    client = FakeSweepClient([{**row, "run_id": i + 1} for i, row in enumerate(offline)])
    body = {"name": "tiny", "scenario": {}, "axes": [{"path": "host.memory_mb", "values": [512, 1024]}]}
    out, err = io.StringIO(), io.StringIO()
    code = submit_sweep(client, body, out, err, wait=True, poll_s=0)
    assert code == 0 and client.posted == [body] and client.polls == 2
    text = out.getvalue()
    assert text.startswith("sweep 7: 2 runs, 1 axis\n")
    assert text.rstrip().endswith("report: http://sim:8000/sweeps/7/report")
    assert sweep_cli.format_sweep(offline, ["host.memory_mb"]) in text
    assert "sweep 7 succeeded: 2 succeeded" in err.getvalue()
    out = io.StringIO()
    assert submit_sweep(SimpleNamespace(create_sweep=client.create_sweep, link_url=client.link_url),
                        body, out, io.StringIO(), wait=False) == 0
    assert out.getvalue() == "sweep 7: 2 runs, 1 axis\nreport: http://sim:8000/sweeps/7/report\n"


def row(point: dict, policy: str, slowdown=None, refused=0, status="succeeded") -> dict:
    return {"point": point, "policy": policy, "params": {}, "status": status, "error": None,
            "metrics": {"slowdown": slowdown, "vms_refused": refused}}


def test_the_answer_line_in_words_and_figures():
    rows = [row({"h": 4096}, "esx", 1.42), row({"h": 4096}, "kvm", 1.3), row({"h": 4096}, "static", 1.0, refused=1),
            row({"h": 8192}, "esx", 1.05), row({"h": 8192}, "kvm", 1.3), row({"h": 8192}, "static", 1.0)]
    assert sweep_cli.worst_slowdown_line(rows, ["h"]) == (
        "Worst mean slowdown over the sweep: esx 1.42x at h=4096; kvm 1.30x at every point; static 1.00x at "
        "every point (a VM refused at 1 of 2 points); best with every VM admitted: kvm.")
    rows = [row({"h": 1}, "esx", 1.2), row({"h": 1}, "kvm", 1.2), row({"h": 1}, "static", status="cancelled")]
    assert sweep_cli.worst_slowdown_line(rows, ["h"]) == (
        "Worst mean slowdown over the sweep: esx 1.20x at h=1; kvm 1.20x at h=1; static -; best: esx, kvm; "
        "1 of 3 runs cancelled.")
    table = sweep_cli.format_sweep(rows, ["h"])
    assert "cancelled" in table.splitlines()[-1] and "static: cancelled" in table


def test_links_of_an_answer_stay_on_the_server():
    from service.client import APIError, Client

    client = Client("http://127.0.0.1:9/api/v1", token="secret")
    assert client.link_url("/sweeps/7/report") == "http://127.0.0.1:9/sweeps/7/report"
    assert client.link_url("https://elsewhere/r") == "https://elsewhere/r"
    with pytest.raises(APIError, match="link to another server"):
        client.follow("http://elsewhere:9/api/v1/sweeps/7/results")


def test_trace_paths_are_relative_to_the_scenario_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.txt").write_text("".join(f"{page}\n" for page in range(64)) * 4)
    doc = tiny_scenario(workload={"phases": [{"kind": "trace", "trace": "traces/t.txt"}]})
    path = write_json(tmp_path, doc)
    monkeypatch.chdir(tmp_path.parent)
    rows = sweep_json(capsys, path, "--axis", "host.memory_mb=1024,2048", "--quiet")
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    code, out, err = run(capsys, "sweep", path, "--axis", "vms[app].workload.phases[0].trace=traces/t.txt,gone.txt")
    assert_user_error(code, err, "error: --axis vms[app].workload.phases[0].trace=\"gone.txt\": "
                                 "vms[0].workload.phases[0].trace: no such trace file: ")
    assert out == ""


def test_sweep_results_are_the_rows_whether_listed_or_wrapped(monkeypatch):
    from service.client import Client

    client = Client("http://127.0.0.1:9")
    for answer in ([{"policy": "esx"}], {"results": [{"policy": "esx"}]}):
        monkeypatch.setattr(client, "request", lambda method, path, *a, answer=answer, **k: answer)
        assert client.sweep_results({"id": 7, "links": {"results": "/api/v1/sweeps/7/results"}}) == [{"policy": "esx"}]
        assert client.sweep_results({"id": 7}) == [{"policy": "esx"}]
