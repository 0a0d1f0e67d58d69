"""The HTTP API under ``/api/v1``: one flask-smorest blueprint per resource, schemas in
``service/api/schemas``. ``service.app.create_app`` registers them."""
from __future__ import annotations

from flask_smorest import Blueprint


def blueprints() -> list[tuple[Blueprint, str]]:
    """Every API blueprint with its URL prefix, in the order the OpenAPI document lists them."""
    from . import (
        capacity_searches, comparisons, experiments, health, hosts, plugins, runs, sweeps, traces, vm_templates,
    )

    return [
        (hosts.blp, "/api/v1/hosts"),
        (vm_templates.blp, "/api/v1/vm-templates"),
        (traces.blp, "/api/v1/traces"),
        (plugins.blp, "/api/v1/plugins"),
        (experiments.blp, "/api/v1/experiments"),
        (runs.blp, "/api/v1/runs"),
        (comparisons.blp, "/api/v1/comparisons"),
        (sweeps.blp, "/api/v1/sweeps"),
        (capacity_searches.blp, "/api/v1/capacity-searches"),
        (health.blp, "/api/v1/health"),
    ]
