"""SHARDS: an LRU stack-distance histogram estimated from a spatially hashed sample of the pages.

Spatially hashed sampling (Waldspurger et al., "Efficient MRC Construction with SHARDS",
FAST '15) keeps a page when a hash of its id falls below a threshold, so every reference to a
kept page is kept and none of the others: LRU over the kept pages is an exact LRU of a smaller
trace, and its stack distances scale back to the whole trace. Fixed-rate: the threshold is
``rate`` of the hash space, chosen before the pass.

Two corrections over the plain 1/R scaling, both possible because ``load_trace`` has already
read the whole trace (so the footprint D and the reference count n are known exactly):

- A sampled distance d_s counts the page itself plus d_s - 1 other *sampled* pages; the other
  pages are a Binomial(k, R) draw from the k pages touched since, so the estimate of the full
  distance is 1 + (d_s - 1) / R, not d_s / R. Repeats (distance 1, half of a lackey trace)
  then stay at 1 instead of jumping to 1/R.
- R is the share of pages actually kept (D_s / D), not the nominal rate; each sampled reuse
  counts 1/R, and the gap between the estimated reuses and the exact n - D goes to distance 1
  (the paper's SHARDS_adj: a hot page that falls in or out of the sample skews the reference
  count much more than the page count). The cold misses stay the exact D. Scaling every
  distance by (n - D) / sampled reuses instead was measured too and was worse on every shared
  trace (0.039 against 0.0065 on cloudphysics_blocks at R = 0.042).

The hash is a fixed 64-bit mixer (splitmix64's finaliser) of the page id and a constant seed,
so the sample, and the curve, are the same on every run.
"""
from __future__ import annotations

import numpy as np

from .stack_distance import distance_histogram

HASH_BITS = 24                # the threshold's resolution: rates down to 1/2^24
HASH_SEED = 0x9E3779B97F4A7C15
DEFAULT_RATE = 0.01           # the FAST '15 paper's usual fixed rate for large traces
MIN_SAMPLED_PAGES = 2048      # below this many kept pages the curve is too coarse: raise the rate


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit changes about half of the output bits. numpy
    wraps uint64 arithmetic silently, which is the modular arithmetic the mixer wants."""
    z = values.astype(np.uint64) + np.uint64(HASH_SEED)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def kept_pages(footprint: int, rate: float) -> np.ndarray:
    """Boolean per dense page id: is the page in the sample? Hashing the D ids once, not the n
    references, because dense ids index straight into the answer."""
    threshold = int(round(rate * (1 << HASH_BITS)))
    mask = np.uint64((1 << HASH_BITS) - 1)
    return (_mix(np.arange(footprint, dtype=np.uint64)) & mask) < np.uint64(threshold)


def check_rate(rate: float) -> float:
    """``rate`` as a float, or ValueError unless it is in (0, 1]."""
    if not 0 < rate <= 1:
        raise ValueError(f"sampling rate must be in (0, 1], not {rate}")
    return float(rate)


def effective_rate(footprint: int, rate: float | None = None) -> float:
    """The rate used for a trace of this footprint: ``rate`` (default DEFAULT_RATE), raised so
    that about MIN_SAMPLED_PAGES pages are kept, and at most 1 (then the result is exact)."""
    rate = check_rate(DEFAULT_RATE if rate is None else rate)
    return min(1.0, max(rate, MIN_SAMPLED_PAGES / max(footprint, 1)))


def sampled_histogram(ids: np.ndarray, rate: float, footprint: int | None = None) -> tuple[np.ndarray, dict]:
    """An estimate of ``distance_histogram(ids)`` (float counts, same length D + 1) from the
    pages kept at ``rate``, and facts about the sample (kept pages and references). ``footprint``
    (D) when the caller knows it already, saving a pass over the trace."""
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    n = int(ids.size)
    if footprint is None:
        footprint = int(ids.max()) + 1 if n else 0
    if n == 0:
        return np.zeros(1), {"sampled_pages": 0, "sampled_references": 0}
    keep = kept_pages(footprint, rate)
    if not keep.any():                   # a tiny trace at a tiny rate: keep its first page
        keep[0] = True
    # dense ids renumbered over the kept pages stay dense in first-touch order
    new_id = np.cumsum(keep, dtype=np.int64) - 1
    sample = new_id[ids[keep[ids]]].astype(np.int32)
    hist_s = distance_histogram(sample)
    pages_s = len(hist_s) - 1
    page_rate = pages_s / footprint
    reuses_s = int(hist_s[1:].sum())
    estimate = np.zeros(footprint + 1, dtype=np.float64)
    estimate[0] = footprint
    if reuses_s:
        d_s = np.nonzero(hist_s[1:])[0] + 1
        full = np.minimum(np.rint(1 + (d_s - 1) / page_rate).astype(np.int64), footprint)
        np.add.at(estimate, full, hist_s[d_s] / page_rate)
    estimate[1] += (n - footprint) - reuses_s / page_rate
    if estimate[1] < 0:
        # the sample over-counts reuses by more than its distance-1 bucket holds: no room for
        # the correction there, so scale every bucket to the exact n - D instead
        estimate[1] = 0.0
        total = estimate[1:].sum()
        if total > 0:
            estimate[1:] *= (n - footprint) / total
    return estimate, {"sampled_pages": pages_s, "sampled_references": int(sample.size)}


def mean_absolute_error(misses_a: np.ndarray, misses_b: np.ndarray, references: int) -> float:
    """Mean over every cache size 1..D of |miss ratio a - miss ratio b|: the figure the FAST '15
    paper reports, here over all sizes rather than its histogram buckets."""
    a = np.asarray(misses_a[1:], dtype=np.float64)
    b = np.asarray(misses_b[1:], dtype=np.float64)
    return float(np.mean(np.abs(a - b)) / references) if a.size else 0.0
