"""What the service stores about an uploaded trace: its LRU miss-ratio curve (exact, or SHARDS
above the engine's size limit), working sets and reuse distances, small enough for a JSON column
and an HTTP answer.

The curve at every size has D + 1 points (265,873 for cloudphysics_pages4k); it is kept at
MAX_POINTS sizes at most: half spaced geometrically (the small caches, where a curve usually
falls fastest) and half evenly up to the footprint, always with 1 frame and the footprint.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.config import PAGES_PER_MB
from ..engine.stack_distance import trace_profile
from ..engine.traces import load_trace

MAX_POINTS = 256
VERSION = 1          # bump when the stored shape changes, so old rows can be told apart


def curve_sizes(footprint: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Cache sizes (frames, 1..footprint, ascending, unique) at which the curve is kept."""
    if footprint <= max_points:
        return np.arange(1, footprint + 1, dtype=np.int64)
    half = max_points // 2
    geometric = np.geomspace(1, footprint, half)
    even = np.linspace(1, footprint, max_points - half)
    sizes = np.unique(np.rint(np.concatenate([geometric, even])).astype(np.int64))
    return sizes


def _mb(pages: int | float) -> float:
    return round(pages / PAGES_PER_MB, 3)


def analyse_ids(ids: np.ndarray) -> dict:
    """The stored analysis of a dense trace (see TraceAnalysisSchema for the fields): exact, or
    sampled above the engine's size limit."""
    profile = trace_profile(ids)
    misses = profile["misses"]
    refs = profile["references"]
    sizes = curve_sizes(profile["footprint"])
    curve = [{"frames": int(c), "mb": _mb(int(c)), "miss_ratio": round(float(misses[c]) / refs, 6)}
             for c in sizes]
    return {
        "version": VERSION,
        "method": profile["method"],
        "sampling_rate": profile["sampling_rate"],
        # below this many pages a sampled curve cannot tell sizes apart (docs/traces.md)
        "resolution_pages": 1 if not profile["sampling_rate"] else int(np.ceil(1 / profile["sampling_rate"])),
        "references": refs,
        "footprint_pages": profile["footprint"],
        "cold_misses": profile["cold_misses"],
        "curve": curve,
        "working_set": [{"share": key, "pages": pages, "mb": _mb(pages)}
                        for key, pages in profile["working_set"].items()],
        "reuse_histogram": profile["reuse_histogram"],
    }


def analyse_file(path: str | Path) -> dict:
    return analyse_ids(load_trace(path))
