"""Exact LRU stack distances in one pass, and everything that follows from them: the miss count
at every cache size, the working-set sizes and the reuse-distance histogram.

LRU has the inclusion property (Mattson et al., 1970): a reference hits in a cache of C frames
exactly when its stack distance (distinct pages touched since the previous reference to the same
page, itself included) is at most C. So one histogram of distances gives the whole curve, instead
of one replay per size.

The distance is counted with a Fenwick tree over reference times holding a 1 at each page's most
recent reference: the pages touched after time s are the marks past s, O(log n) per reference.
The few most recent pages stay out of the tree, where most references find them.
"""
from __future__ import annotations

import numba
import numpy as np

COLD = 0        # histogram slot for first references (infinite distance)
HOT = 8         # most recent pages kept out of the tree (_distance_histogram)


@numba.njit(cache=True, nogil=True)
def _distance_histogram(ids, distinct):
    n = ids.shape[0]
    # The HOT most recently used pages are kept apart, in LRU order in a small array: a reference
    # to one of them (97 % of lackey_sort's) is at its position's distance and only reorders the
    # array. The others hold a mark in the tree at the time they left that array (pages leave it
    # in LRU order, so those times order them as their last references did).
    hot = np.full(HOT, -1, dtype=np.int32)
    held = 0
    # The tree covers a window of logical times, not all n references: when the window is full
    # the live marks (at most one per page) are renumbered 1..k. A window of a few times the
    # footprint stays in the CPU cache and makes log(window) small, which matters more than the
    # O(window) renumbering every (window - footprint) references.
    size = min(n, max(4 * distinct, 4096))
    tree = np.zeros(size + 1, dtype=np.int32)       # 1-based Fenwick tree over logical times
    last = np.zeros(distinct, dtype=np.int64)       # time of the page's mark; 0 = never seen or hot
    hist = np.zeros(distinct + 1, dtype=np.int64)   # hist[d]: references at distance d; hist[0]: cold
    marks = 0
    now = 0
    for t0 in range(n):
        page = ids[t0]
        found = -1
        for j in range(held):
            if hot[j] == page:
                found = j
                break
        if found >= 0:
            hist[found + 1] += 1
            for j in range(found, 0, -1):
                hot[j] = hot[j - 1]
            hot[0] = page
            continue
        s = last[page]
        if s == 0:
            hist[0] += 1
        else:
            prefix = 0
            i = s
            while i > 0:
                prefix += tree[i]
                i -= i & -i
            # every hot page, the marks after s, and the page itself
            hist[held + marks - prefix + 1] += 1
            i = s
            while i <= size:
                tree[i] -= 1
                i += i & -i
            last[page] = 0
            marks -= 1
        if held < HOT:
            held += 1
        else:
            if now == size:
                now = _renumber(tree, last, marks)
            now += 1
            leaving = hot[HOT - 1]
            i = now
            while i <= size:
                tree[i] += 1
                i += i & -i
            last[leaving] = now
            marks += 1
        for j in range(held - 1, 0, -1):
            hot[j] = hot[j - 1]
        hot[0] = page
    return hist


@numba.njit(cache=True, nogil=True)
def _renumber(tree, last, seen):
    """Give the pages with a mark logical times 1..seen in the order of their marks and
    rebuild the tree with those marks; returns the new current time."""
    order = np.argsort(last)
    skip = last.shape[0] - seen                      # never-touched pages sort first (time 0)
    for rank in range(seen):
        last[order[skip + rank]] = rank + 1
    size = tree.shape[0] - 1
    tree[:] = 0
    for i in range(1, seen + 1):
        tree[i] += 1
        j = i + (i & -i)
        if j <= size:
            tree[j] += tree[i]
    for i in range(seen + 1, size + 1):
        j = i + (i & -i)
        if j <= size:
            tree[j] += tree[i]
    return seen


def distance_histogram(ids: np.ndarray) -> np.ndarray:
    """``hist[d]`` = references at stack distance d (1..D); ``hist[0]`` = first references.
    ``ids`` must be dense (0..D-1), as load_trace returns them."""
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    if ids.size == 0:
        return np.zeros(1, dtype=np.int64)
    return _distance_histogram(ids, int(ids.max()) + 1)


def lru_misses(hist: np.ndarray) -> np.ndarray:
    """``misses[C]`` for C = 0..D frames (index 0 is the empty cache: every reference misses),
    cold misses included."""
    refs = int(round(float(hist.sum())))        # a sampled histogram holds floats
    hits = np.concatenate(([0], np.cumsum(hist[1:])))
    return refs - hits


def working_set_sizes(hist: np.ndarray, fractions=(0.90, 0.95, 0.99)) -> dict[str, int]:
    """Smallest cache (frames) that gets the given fraction of the hits an unbounded cache gets.

    The fraction is of the *reuses*, not of all references: cold misses are unavoidable, so a
    trace with many first touches could never reach 99 % of all references as hits."""
    reuse_hits = np.cumsum(hist[1:])
    total = int(reuse_hits[-1]) if reuse_hits.size else 0
    out = {}
    for f in fractions:
        key = f"{round(f * 100):g}%"
        if total == 0:
            out[key] = 0
            continue
        need = int(np.ceil(f * total - 1e-9))
        out[key] = int(np.searchsorted(reuse_hits, need, side="left")) + 1
    return out


def reuse_histogram(hist: np.ndarray) -> list[dict]:
    """Stack distances in power-of-two buckets [2^k, 2^(k+1)), then the first references."""
    rows = []
    d_max = len(hist) - 1
    low = 1
    while low <= d_max:
        high = min(2 * low - 1, d_max)
        count = int(round(float(hist[low:high + 1].sum())))     # a sampled histogram holds floats
        rows.append({"min": low, "max": high, "references": count})
        low *= 2
    rows.append({"min": None, "max": None, "references": int(round(float(hist[COLD]))), "cold": True})
    return rows


# Above this many references ``trace_profile(method="auto")`` samples (service.engine.shards).
# The exact pass runs at about 50 M references/s here, so the limit keeps a profile to about a
# second of work; every trace in shared/traces (20 M at most) stays exact.
SAMPLE_ABOVE_REFS = 1 << 25
METHODS = ("auto", "exact", "sampled")


def trace_profile(ids: np.ndarray, method: str = "auto", rate: float | None = None) -> dict:
    """Curve, working sets and histogram of a dense trace, as plain JSON-able values.

    ``method``: "exact" (stack distances of every reference), "sampled" (SHARDS at ``rate``, or
    by default shards.effective_rate of the footprint) or "auto" (sampled above
    SAMPLE_ABOVE_REFS references). ``misses`` is then an estimate, clipped to [D, n]."""
    from . import shards        # here, not at the top: shards builds on this module's kernel

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    refs = int(ids.size)
    sampled = method == "sampled" or (method == "auto" and refs > SAMPLE_ABOVE_REFS)
    facts: dict = {"method": "exact", "sampling_rate": None}
    if sampled:
        footprint = int(ids.max()) + 1 if refs else 0
        # an explicit rate is taken as given (to measure the error); the default has a floor
        used = shards.effective_rate(footprint) if rate is None else shards.check_rate(rate)
        # a sample of every page is the exact computation, without the sampling's extra pass
        sampled = used < 1.0
    if sampled:
        hist, sample = shards.sampled_histogram(ids, used, footprint)
        misses = np.clip(lru_misses(hist), footprint, refs)
        facts = {"method": "shards", "sampling_rate": used, **sample}
    else:
        hist = distance_histogram(ids)
        misses = lru_misses(hist)
    footprint = len(hist) - 1
    return {
        "references": refs, "footprint": footprint, "cold_misses": int(round(float(hist[COLD]))),
        **facts,
        "working_set": working_set_sizes(hist),
        "reuse_histogram": reuse_histogram(hist),
        "misses": misses,      # numpy array indexed by frames; callers choose what to print
    }
