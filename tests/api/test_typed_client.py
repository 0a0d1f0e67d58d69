"""The API for typed clients: the OpenAPI document is valid, names every operation, and a client
generated from it by openapi-python-client (offline) works against a real server, with typed
models for hosts, scenarios, runs, summaries, metrics and comparisons."""
from __future__ import annotations

import importlib
import json
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from service.api.operations import OPERATION_IDS, PREFIX
from service.app import create_app
from service.settings import Settings
from service.tasks import execute_run

from .helpers import HOST, Api, error_fields, experiment, token_for
from .test_end_to_end import Http

PACKAGE = "vmemlab_typed_client"


def _document(client: FlaskClient) -> dict[str, Any]:
    return client.get(f"{PREFIX}/openapi.json").get_json()


def test_document_is_valid_openapi(client: FlaskClient) -> None:
    validate(_document(client))


def test_every_operation_has_its_readable_id(client: FlaskClient) -> None:
    document = _document(client)
    named = {(method, path[len(PREFIX):]): operation["operationId"]
             for path, operations in document["paths"].items() for method, operation in operations.items()
             if method != "parameters"}
    assert named == OPERATION_IDS
    assert len(set(named.values())) == len(named)
    links = [link for operations in document["paths"].values() for operation in operations.values()
             if isinstance(operation, dict) for response in operation.get("responses", {}).values()
             if isinstance(response, dict) for link in response.get("links", {}).values()]
    assert links and {link["operationId"] for link in links} <= set(named.values())
    sort = next(p for p in document["paths"][f"{PREFIX}/runs"]["get"]["parameters"] if p["name"] == "sort")["schema"]
    assert dict(zip(sort["enum"], sort["x-enum-varnames"]))["-created_at"] == "CREATED_AT_DESC"


def test_comparisons_take_repeated_and_comma_separated_runs(api: Api) -> None:
    runs = [run["id"] for run in api.create("/api/v1/experiments",
                                            experiment(policies=("static", "esx", "kvm")))["runs"]]
    wanted = [runs[2], runs[0], runs[1]]
    for query in ("&".join(f"runs={i}" for i in wanted), "runs=" + ",".join(map(str, wanted)),
                  f"runs={wanted[0]},{wanted[1]}&runs={wanted[2]}"):
        response = api.get(f"/api/v1/comparisons?{query}")
        assert response.status_code == 200, (query, response.get_data(as_text=True))
        assert [row["run_id"] for row in response.get_json()["runs"]] == wanted, query
    # none dropped silently: one bad value among repeated ones refuses the whole request
    assert "runs" in str(error_fields(api.get(f"/api/v1/comparisons?runs={runs[0]}&runs=x"), "query"))
    assert "runs" in error_fields(api.get(f"/api/v1/comparisons?runs={runs[0]}&runs=999999"), "query")


@pytest.fixture
def server(settings: Settings) -> Iterator[Http]:
    http = Http(create_app(settings), token=token_for(settings.database_url))
    try:
        yield http
    finally:
        http.close()


def generate_client(document: dict[str, Any], folder: Path) -> None:
    """openapi-python-client, in this process with every socket connection refused: it must need
    no network, and the document must give it nothing to warn about."""
    from openapi_python_client import generate
    from openapi_python_client.config import Config, ConfigFile, MetaType

    source = folder / "openapi.json"
    source.write_text(json.dumps(document))
    config = Config.from_sources(ConfigFile(post_hooks=[]), MetaType.NONE, source, "utf-8", overwrite=True,
                                 output_path=folder / PACKAGE)

    def offline(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("openapi-python-client tried to reach the network")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", offline)
        errors = generate(config=config)
    assert [f"{e.header}: {e.detail}" for e in errors] == []


def _import_client(folder: Path) -> Any:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]           # the package generated for another database's test
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))


def test_generated_client_runs_a_flow(server: Http, settings: Settings, tmp_path: Path) -> None:
    with urllib.request.urlopen(f"{server.base}{PREFIX}/openapi.json", timeout=30) as response:
        document = json.load(response)
    generate_client(document, tmp_path)
    _import_client(tmp_path)
    from vmemlab_typed_client import AuthenticatedClient
    from vmemlab_typed_client.api.comparisons import compare_runs
    from vmemlab_typed_client.api.experiments import create_experiment, get_experiment_comparison
    from vmemlab_typed_client.api.hosts import create_host, get_host
    from vmemlab_typed_client.api.runs import get_run, get_run_series, get_run_series_csv, list_runs
    from vmemlab_typed_client.models import (
        Comparison, Error, ExperimentDetail, ExperimentDocument, Host, HostBody, HostSpec, ListRunsSort, Metrics,
        RunDetail, RunSummary, Series,
    )

    client = AuthenticatedClient(base_url=server.base, token=server.token, raise_on_unexpected_status=True)
    host = create_host.sync(client=client, body=HostBody(name="typed", spec=HostSpec.from_dict(HOST)))
    assert isinstance(host, Host) and isinstance(host.spec, HostSpec) and host.spec.memory_mb == HOST["memory_mb"]
    assert get_host.sync(host.id, client=client).name == "typed"

    body = ExperimentDocument.from_dict(experiment(host_id=host.id, policies=("static", "esx", "kvm")))
    created = create_experiment.sync(client=client, body=body)
    assert isinstance(created, ExperimentDetail) and [r.policy_name for r in created.runs] == ["static", "esx", "kvm"]
    assert created.scenario.host.memory_mb == HOST["memory_mb"] and created.scenario.vms[1].name == "b"
    queued = created.runs[0].id
    assert isinstance(get_run_series_csv.sync(queued, client=client), Error)     # 409: not succeeded yet
    for run in created.runs[:2]:
        assert execute_run(run.id, worker="typed-client", settings=settings) == "succeeded"

    runs = list_runs.sync(client=client, experiment_id=created.id, sort=ListRunsSort.SLOWDOWN_DESC)
    assert {r.id for r in runs} == {r.id for r in created.runs} and all(isinstance(r.metrics, Metrics) for r in runs)
    assert runs[-1].metrics.slowdown is None            # the run still queued comes last
    detail = get_run.sync(created.runs[1].id, client=client)
    assert isinstance(detail, RunDetail) and isinstance(detail.summary, RunSummary)
    assert [vm.name for vm in detail.summary.vms] == ["a", "b"] and detail.summary.host.memory_mb == HOST["memory_mb"]
    assert detail.metrics.slowdown == pytest.approx(detail.summary.slowdown)

    ids = [r.id for r in created.runs]
    comparison = compare_runs.sync(client=client, runs=ids, baseline_run=ids[1])
    assert isinstance(comparison, Comparison) and [row.run_id for row in comparison.runs] == ids
    assert comparison.baseline.run_id == ids[1] and comparison.runs[1].is_baseline
    static, esx, kvm = comparison.runs
    assert static.deltas.slowdown == pytest.approx(static.metrics.slowdown - esx.metrics.slowdown)
    assert kvm.metrics.slowdown is None and kvm.deltas.slowdown is None
    assert isinstance(get_experiment_comparison.sync(created.id, client=client), Comparison)

    series = get_run_series.sync(ids[0], client=client)
    assert isinstance(series, Series) and series.epochs == 4
    csv_text = get_run_series_csv.sync(ids[0], client=client)
    assert isinstance(csv_text, str) and csv_text.startswith("epoch,time_s,host_state,vm,")
    assert len(csv_text.strip().splitlines()) == 1 + 4 * 2       # a row per epoch and VM
