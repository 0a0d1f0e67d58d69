"""Scenario documents for the service tests."""
from __future__ import annotations

import copy
from typing import Any


def tiny(policies=("static",), duration_s: float = 2.0, **top: Any) -> dict[str, Any]:
    """Two small VMs on a host that fits one statically: a fraction of a second per run."""
    doc = {
        "name": "tiny", "duration_s": duration_s, "epoch_s": 0.5, "seed": 3,
        "host": {"memory_mb": 512, "reserve_mb": 0, "vm_overhead_mb": 16, "swap_device": "ssd"},
        "vms": [
            {"name": "a", "memory_mb": 256, "os_mb": 32,
             "workload": {"phases": [{"kind": "uniform", "footprint_mb": 160, "duration_s": duration_s}]}},
            {"name": "b", "memory_mb": 256, "os_mb": 32,
             "workload": {"phases": [{"kind": "zipf", "footprint_mb": 200, "duration_s": duration_s}]}},
        ],
        "policies": [{"name": p, "params": {}} for p in policies],
    }
    doc.update(top)
    return doc


def busy(duration_s: float, policies=("static",)) -> dict[str, Any]:
    """One VM with a large Zipf working set: about 0.3 s of wall time per simulated second."""
    return {
        "name": "busy", "duration_s": duration_s, "seed": 5,
        "host": {"memory_mb": 4096},
        "vms": [{"name": "db", "memory_mb": 2048, "os_mb": 64,
                 "workload": {"phases": [{"kind": "zipf", "footprint_mb": 1500, "zipf_s": 0.9,
                                          "duration_s": duration_s, "compute_ns": 200}]}}],
        "policies": [{"name": p, "params": {}} for p in policies],
    }


def without(doc: dict, *path: Any) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return doc
