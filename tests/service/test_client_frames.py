"""The Python client's DataFrames (``frame=True``) against a real API served on a port: runs, a
run's series, a comparison and a sweep's table, each equal to the JSON it comes from."""
from __future__ import annotations

import sys
import threading
from typing import Iterator

import pytest

from service import tasks
from service.client import Client
from tests.api.helpers import token_for
from tests.helpers import free_port

from .helpers import tiny

pd = pytest.importorskip("pandas")


@pytest.fixture
def client(settings, monkeypatch) -> Iterator[Client]:
    from werkzeug.serving import make_server

    from service.app import create_app

    monkeypatch.setattr("service.api.experiments.enqueue", lambda ids, app=None: [])   # run here instead
    monkeypatch.setattr("service.api.sweeps.enqueue_group", lambda *args, **kwargs: [])
    server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Client(f"http://127.0.0.1:{server.server_port}", token=token_for(settings.database_url, "admin", "nb"))
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _run_all(ids) -> None:
    for run_id in ids:
        assert tasks.execute_run(run_id, worker="test") == "succeeded"


def test_runs_series_and_comparison_as_frames(client: Client):
    experiment = client.create_experiment(tiny(("static", "dynamic-memory")))
    ids = [run["id"] for run in experiment["runs"]]
    _run_all(ids)

    runs = client.runs(experiment_id=experiment["id"], frame=True, page_size=1)      # two pages
    assert sorted(runs.index) == sorted(ids) and runs.index.name == "run_id"
    assert set(runs["policy_name"]) == {"static", "dynamic-memory"} and set(runs["status"]) == {"succeeded"}
    assert str(runs["finished_at"].dtype).startswith("datetime64") and runs["finished_at"].dt.tz is not None
    listed = {r["id"]: r for r in client.runs(experiment_id=experiment["id"])}
    for run_id in ids:
        assert runs.loc[run_id, "slowdown"] == pytest.approx(listed[run_id]["metrics"]["slowdown"])
        assert runs.loc[run_id, "wall_s"] == pytest.approx(listed[run_id]["wall_s"])

    series = client.series(ids[0], frame=True)
    raw = client.series(ids[0])["series"]
    assert series.index.name == "time_s" and list(series.index) == raw["time_s"]
    assert list(series.columns.names) == ["scope", "field"]
    assert list(series[("host", "used_mb")]) == raw["host"]["used_mb"]
    resident = series.xs("resident_mb", axis=1, level="field")
    assert set(resident.columns) == {"a", "b"}
    assert list(resident["a"]) == raw["vms"]["a"]["resident_mb"]
    # a policy's own per-VM series (Dynamic Memory's pressure) join the VM's columns
    dm = runs.index[runs["policy_name"] == "dynamic-memory"][0]
    dm_series, dm_raw = client.series(dm, frame=True), client.series(dm)["series"]
    for vm, fields in dm_raw["policy"].items():
        for field, values in fields.items():
            assert [None if pd.isna(v) else v for v in dm_series[(vm, field)]] == values      # null: NaN
    assert dm_raw["policy"] and len(dm_series) == len(dm_raw["time_s"])

    comparison = client.comparison(experiment["id"], frame=True)
    answer = client.comparison(experiment["id"])
    assert sorted(comparison.index) == sorted(ids)
    baseline = comparison[comparison["is_baseline"]]
    assert len(baseline) == 1 and baseline["slowdown_ratio"].iloc[0] == pytest.approx(1.0)
    for run in answer["runs"]:
        assert comparison.loc[run["run_id"], "policy"] == run["policy"]
        assert comparison.loc[run["run_id"], "peak_used_mb"] == pytest.approx(run["metrics"]["peak_used_mb"])
    across = client.compare_runs(ids, frame=True)
    assert sorted(across.index) == sorted(ids)


def test_a_sweeps_table_as_a_frame(client: Client):
    doc = tiny(("static",))
    sweep = client.create_sweep({"scenario": {k: v for k, v in doc.items() if k != "policies"},
                                 "axes": [{"path": "host.memory_mb", "values": [256, 512]}],
                                 "policies": [{"name": "static"}]})
    _run_all(row["run_id"] for row in client.sweep_table(sweep["id"]))
    table = client.sweep_table(sweep["id"], frame=True)
    assert len(table) == 2 and list(table.columns[:2]) == ["host.memory_mb", "policy"]
    assert sorted(table["host.memory_mb"]) == [256, 512] and set(table["status"]) == {"succeeded"}
    assert "slowdown" in table.columns and "vms_refused" in table.columns


def test_without_pandas_the_message_says_what_to_install(client: Client, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"vmemlab\[notebook\]"):
        client.runs(frame=True)
    assert isinstance(client.runs(), list)          # the JSON still works
