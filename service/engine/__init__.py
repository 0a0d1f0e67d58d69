"""The simulator: a library with no Flask, Celery or database in it.

``simulate(scenario, policy)`` runs one scenario under one policy and returns a ``RunResult``;
``mrc.miss_counts`` replays a trace through the guest-replacement path alone.
"""
from .numba_cache import engine_cache

with engine_cache():
    from . import kernel, mechanisms  # noqa: F401  (compiled code, cached by source digest)

from .config import (
    DEVICE_PRESETS, PAGE_SIZE, ContentMix, Costs, Device, Event, Host, Phase, Scenario,
    ScenarioError, VM,
)
from .simulator import ENGINE_VERSION, PolicyError, RunCancelled, RunResult, Simulation, simulate

__all__ = [
    "ContentMix", "Costs", "DEVICE_PRESETS", "Device", "ENGINE_VERSION", "Event", "Host", "PAGE_SIZE",
    "Phase", "PolicyError", "RunCancelled", "RunResult", "Scenario", "ScenarioError", "Simulation",
    "VM", "simulate",
]
