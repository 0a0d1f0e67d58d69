"""Every operation's ``operationId``: the name a generated client gives its function
(``list_hosts``, ``get_run_series``) and the name OpenAPI links use to point at an operation.

One table, so that a name never changes by accident when a view is renamed or moved; an
operation missing from it still gets a name made from its method and path (the test of the
document asks for every one to be in the table).
"""
from __future__ import annotations

import re
from typing import Any, Optional

from apispec import BasePlugin

PREFIX = "/api/v1"


def _editable(singular: str, plural: str, collection: str, item: str) -> dict[tuple[str, str], str]:
    return {("get", collection): f"list{plural}", ("post", collection): f"create{singular}",
            ("get", item): f"get{singular}", ("put", item): f"replace{singular}",
            ("patch", item): f"patch{singular}", ("delete", item): f"delete{singular}"}


OPERATION_IDS: dict[tuple[str, str], str] = {
    **_editable("Host", "Hosts", "/hosts", "/hosts/{host_id}"),
    **_editable("VmTemplate", "VmTemplates", "/vm-templates", "/vm-templates/{template_id}"),
    ("get", "/traces"): "listTraces",
    ("post", "/traces"): "uploadTrace",
    ("get", "/traces/{trace_id}"): "getTrace",
    ("delete", "/traces/{trace_id}"): "deleteTrace",
    ("get", "/plugins"): "listPlugins",
    ("post", "/plugins"): "registerPlugin",
    ("get", "/plugins/{name}"): "getPlugin",
    ("patch", "/plugins/{name}"): "patchPlugin",
    ("get", "/experiments"): "listExperiments",
    ("post", "/experiments"): "createExperiment",
    ("get", "/experiments/{experiment_id}"): "getExperiment",
    ("delete", "/experiments/{experiment_id}"): "deleteExperiment",
    ("get", "/experiments/{experiment_id}/comparison"): "getExperimentComparison",
    ("get", "/runs"): "listRuns",
    ("get", "/runs/{run_id}"): "getRun",
    ("post", "/runs/{run_id}/cancel"): "cancelRun",
    ("get", "/runs/{run_id}/series"): "getRunSeries",
    ("get", "/runs/{run_id}/series.csv"): "getRunSeriesCsv",
    ("get", "/comparisons"): "compareRuns",
    ("get", "/sweeps"): "listSweeps",
    ("post", "/sweeps"): "createSweep",
    ("get", "/sweeps/{sweep_id}"): "getSweep",
    ("delete", "/sweeps/{sweep_id}"): "deleteSweep",
    ("get", "/sweeps/{sweep_id}/results"): "getSweepResults",
    ("get", "/sweeps/{sweep_id}/results.csv"): "getSweepResultsCsv",
    ("post", "/sweeps/{sweep_id}/cancel"): "cancelSweep",
    ("get", "/capacity-searches"): "listCapacitySearches",
    ("post", "/capacity-searches"): "createCapacitySearch",
    ("get", "/capacity-searches/{search_id}"): "getCapacitySearch",
    ("delete", "/capacity-searches/{search_id}"): "deleteCapacitySearch",
    ("post", "/capacity-searches/{search_id}/cancel"): "cancelCapacitySearch",
    ("get", "/capacity-searches/{search_id}/history"): "getCapacitySearchHistory",
    ("get", "/health"): "getHealth",
}


def operation_id(method: str, path: str) -> str:
    """The operationId of ``method`` ``path`` (a path under /api/v1, without the prefix)."""
    known = OPERATION_IDS.get((method.lower(), path))
    if known:
        return known
    words = re.findall(r"[A-Za-z0-9]+", path.replace("{", "by_").replace("}", ""))
    return method.lower() + "".join(word[:1].upper() + word[1:] for word in words)


class OperationIds(BasePlugin):
    """Writes each operation's ``operationId`` from ``OPERATION_IDS``."""

    def operation_helper(self, path: Optional[str] = None, operations: Optional[dict] = None, **_: Any) -> None:
        if not path or not path.startswith(PREFIX):
            return
        for method, operation in (operations or {}).items():
            if isinstance(operation, dict):
                operation["operationId"] = operation_id(method, path[len(PREFIX):])
