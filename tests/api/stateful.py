"""Schemathesis' stateful phase against the API: sequences of calls that follow the document's
OpenAPI links (service/api/links.py), so that item operations get ids that exist (from what a
POST created or a listing returned) instead of the random ids that mostly answer 404.

Every step is checked like a stateless request (fuzzing.CHECKS) plus the stateful checks: a
resource just created can be read (ensure_resource_availability) and one just deleted cannot
(use_after_free). ``Reach`` records, per operation, whether it was ever answered about an
existing resource; the tests fail for any operation with a path parameter that never was.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, ContextManager

from flask import Flask
from hypothesis import HealthCheck, Phase, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import ensure_resource_availability, use_after_free

from .fuzzing import CHECKS

# scenarios (sequences of calls) per batch, and batches at most: batches run until every operation
# has been reached (a batch reaches all but a few, a different few each time), each from its own
# random seed, so that whether a test passes does not hang on one seed's luck; bench/fuzz.py runs more
SCENARIOS = int(os.environ.get("VMEMLAB_FUZZ_SCENARIOS", "100"))
MAX_BATCHES = int(os.environ.get("VMEMLAB_FUZZ_BATCHES", "10"))
# not shrunk: a replay meets a clock that has moved on (see run_stateful). derandomize=False
# explicitly: under a CI variable hypothesis loads its "ci" profile, which derandomizes, and every
# batch would then repeat the first one's scenarios and miss the same operations (CI failed so)
STATEFUL_SETTINGS = settings(max_examples=SCENARIOS, phases=[Phase.explicit, Phase.generate], deadline=None,
                             derandomize=False,
                             stateful_step_count=int(os.environ.get("VMEMLAB_FUZZ_STEPS", "10")), database=None,
                             suppress_health_check=list(HealthCheck))
STATEFUL_CHECKS = [*CHECKS, ensure_resource_availability, use_after_free]
# answers that are only given about a resource that exists: its content, an action on it, a
# conflict with its state (in use, finished, not finished) or with its version (a stale If-Match)
FOUND = {200, 201, 202, 204, 304, 409, 412}


class Reach:
    """Per operation, the statuses answered in the stateful phase."""

    def __init__(self, schema: Any):
        self.with_ids = sorted((op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())
                               if "{" in op.path)
        self.statuses: dict[tuple[str, str], set[int]] = defaultdict(set)

    def add(self, method: str, path: str, status: int) -> None:
        self.statuses[(method.upper(), path)].add(status)

    def unreached(self) -> list[str]:
        """Operations with a path parameter never answered about a resource that exists."""
        return [f"{method} {path}" for method, path in self.with_ids
                if not self.statuses[(method, path)] & FOUND]

    def summary(self) -> dict[str, Any]:
        return {"operations": {f"{m} {p}": sorted(s) for (m, p), s in sorted(self.statuses.items())},
                "unreached": self.unreached()}

    def write(self, database: str) -> None:
        """For bench/fuzz.py, which prints it: into the folder VMEMLAB_FUZZ_REACH names."""
        folder = os.environ.get("VMEMLAB_FUZZ_REACH")
        if folder:
            (Path(folder) / f"reach-{database}.json").write_text(json.dumps(self.summary(), indent=1))


def run_stateful(schema: Any, fresh_app: Callable[[], ContextManager[Flask]], token: str, reach: Reach) -> list[str]:
    """Stateful scenarios, each on an application from ``fresh_app`` (a copy of the seeded state).
    Returns the answers that failed a check (a 500 included), one text each: the operation, what
    was wrong and the request as a curl command.

    Failures are collected rather than raised: hypothesis would replay a failing scenario,
    and a replay meets a clock that has moved on (``created_after`` filters, lists newest first),
    so it could report a flaky test instead of the failure."""
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    # only the document's own links: links schemathesis infers from names (GET /experiments ->
    # DELETE /hosts/{host_id} by host_id) would dilute the scenarios
    schema.config.phases.stateful.inference.algorithms = []
    # valid requests only: invalid input is the stateless phase's work (fuzzing.py), and here a
    # step refused for its input ends the chain of links before it reaches anything
    schema.config.phases.stateful.generation.modes = [GenerationMode.POSITIVE]

    class Scenarios(schema.as_state_machine()):       # type: ignore[misc]
        def setup(self) -> None:
            self.stack = ExitStack()
            self.app = self.stack.enter_context(fresh_app())

        def teardown(self) -> None:
            self.stack.close()

        def call(self, case: Any, **kwargs: Any) -> Any:
            # the WSGI callable rather than the Flask object: schemathesis re-raises a Flask app's
            # exceptions, here the 500 the application answers is the failure reported
            response = case.call(app=self.app.wsgi_app, headers=headers, **kwargs)
            reach.add(case.method, case.operation.path, response.status_code)
            return response

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            try:
                case.validate_response(response, checks=STATEFUL_CHECKS, recorder=self.recorder)
            except (AssertionError, FailureGroup) as failure:
                # the failure's text has the request as a curl command
                failures.append(f"{case.method} {case.operation.path} {case.path_parameters or ''} "
                                f"-> {response.status_code}: {failure}")

    for _ in range(MAX_BATCHES):
        Scenarios.run(settings=STATEFUL_SETTINGS)
        if failures or not reach.unreached():
            break
    return failures
