"""OpenAPI links: which value of a response names the resource that other operations take.

A client (or schemathesis' stateful phase) follows them from what it created or listed to the
item, its parts and its actions, with real ids instead of guesses: ``POST /hosts`` gives the id
and ETag that ``GET/PUT/PATCH/DELETE /hosts/{host_id}`` take, a listing's first row gives an
item, an experiment's runs give ``/runs/{run_id}`` and so on. ``LINKS`` is the one table; the
``LinkDocs`` plugin writes it into the document, under the responses it names.
"""
from __future__ import annotations

from typing import Any, Optional

from apispec import BasePlugin

from .operations import operation_id

PREFIX = "/api/v1"
ID = "$response.body#/id"
FIRST = "$response.body#/0/id"
ETAG = "$response.header.ETag"

# (method, path, statuses) of a source -> [(link name, target method, target path, parameters)]
Source = tuple[str, str, tuple[str, ...]]
Target = tuple[str, str, str, dict[str, str]]


def _editable(item: str, id_name: str, id_value: str, with_etag: bool) -> list[Target]:
    """An item read or created with its ETag: read it, and replace, patch or delete that version."""
    guarded = {f"path.{id_name}": id_value, **({"header.If-Match": ETAG} if with_etag else {})}
    return [("Get", "get", item, {f"path.{id_name}": id_value}), ("Replace", "put", item, guarded),
            ("Patch", "patch", item, guarded), ("Delete", "delete", item, guarded)]


def _run(value: str) -> list[Target]:
    run = "/runs/{run_id}"
    return [("GetRun", "get", run, {"path.run_id": value}),
            ("GetRunSeries", "get", run + "/series", {"path.run_id": value}),
            ("CancelRun", "post", run + "/cancel", {"path.run_id": value})]


def _study(collection: str, id_name: str, value: str, parts: tuple[str, ...]) -> list[Target]:
    item = f"{collection}/{{{id_name}}}"
    targets = [("Get", "get", item, {f"path.{id_name}": value}), ("Delete", "delete", item, {f"path.{id_name}": value})]
    for part in parts:
        method = "post" if part == "cancel" else "get"
        targets.append((part.title().replace(".", ""), method, f"{item}/{part}", {f"path.{id_name}": value}))
    return targets


def _table() -> dict[Source, list[Target]]:
    table: dict[Source, list[Target]] = {}
    for collection, id_name in (("/hosts", "host_id"), ("/vm-templates", "template_id")):
        item = f"{collection}/{{{id_name}}}"
        table["post", collection, ("201",)] = _editable(item, id_name, ID, with_etag=True)
        table["get", item, ("200",)] = _editable(item, id_name, ID, with_etag=True)[1:]
        # a listing has no ETag per row: the item is read first
        table["get", collection, ("200",)] = _editable(item, id_name, FIRST, with_etag=False)[:1]
    trace = "/traces/{trace_id}"
    for source, value in ((("post", "/traces", ("200", "201")), ID), (("get", "/traces", ("200",)), FIRST)):
        table[source] = [("Get", "get", trace, {"path.trace_id": value}),
                         ("Delete", "delete", trace, {"path.trace_id": value})]
    table["get", trace, ("200",)] = [("Delete", "delete", trace, {"path.trace_id": ID})]
    plugin = "/plugins/{name}"
    for source, value in ((("post", "/plugins", ("200", "201")), "$response.body#/name"),
                          (("get", "/plugins", ("200",)), "$response.body#/0/name"),
                          (("get", plugin, ("200",)), "$response.body#/name")):
        table[source] = [("Get", "get", plugin, {"path.name": value}), ("Patch", "patch", plugin, {"path.name": value})]

    experiment = "/experiments/{experiment_id}"

    def by_experiment(value: str) -> list[Target]:
        return [("Get", "get", experiment, {"path.experiment_id": value}),
                ("Comparison", "get", experiment + "/comparison", {"path.experiment_id": value}),
                ("Runs", "get", "/runs", {"query.experiment_id": value}),
                ("Delete", "delete", experiment, {"path.experiment_id": value})]
    first_run = "$response.body#/runs/0/id"
    table["post", "/experiments", ("200", "201")] = by_experiment(ID) + _run(first_run)
    table["get", experiment, ("200",)] = by_experiment(ID)[1:] + _run(first_run) + [
        ("CompareRuns", "get", "/comparisons", {"query.runs": first_run})]
    table["get", "/experiments", ("200",)] = by_experiment(FIRST)
    # a run's CSV from the run only (listed or read), not from everything that names a run: every
    # link is a rule of the stateful fuzzer's, and each more makes the others rarer
    series_csv = "/runs/{run_id}/series.csv"
    table["get", "/runs", ("200",)] = _run(FIRST) + [_csv("GetRunSeriesCsv", series_csv, "path.run_id", FIRST)]
    table["get", "/runs/{run_id}", ("200",)] = _run(ID)[1:] + [
        ("GetExperiment", "get", experiment, {"path.experiment_id": "$response.body#/experiment_id"}),
        _csv("GetRunSeriesCsv", series_csv, "path.run_id", ID)]

    point_run = "$response.body#/results/0/run_id"
    for collection, id_name, parts, extra in (
            ("/sweeps", "sweep_id", ("results", "results.csv", "cancel"), _run(point_run)),
            ("/capacity-searches", "search_id", ("history", "cancel"), [])):
        table["post", collection, ("200", "202")] = _study(collection, id_name, ID, parts) + extra
        table["get", collection, ("200",)] = _study(collection, id_name, FIRST, parts)
        table["get", f"{collection}/{{{id_name}}}", ("200",)] = _study(collection, id_name, ID, parts)[1:] + extra
    return table


def _csv(name: str, path: str, parameter: str, value: str) -> Target:
    return (name, "get", path, {parameter: value})


LINKS = _table()


class LinkDocs(BasePlugin):
    """Writes ``LINKS`` into the responses of the operations they start from."""

    def operation_helper(self, path: Optional[str] = None, operations: Optional[dict] = None, **_: Any) -> None:
        if not path or not path.startswith(PREFIX):
            return
        for method, operation in (operations or {}).items():
            responses = operation.get("responses", {})
            for (source_method, source_path, statuses), targets in LINKS.items():
                if source_method != method or PREFIX + source_path != path:
                    continue
                for status in statuses:
                    response = responses.get(status, responses.get(int(status)))
                    if isinstance(response, dict):
                        response["links"] = {name: {"operationId": operation_id(target_method, target),
                                                    "parameters": parameters}
                                             for name, target_method, target, parameters in targets}
