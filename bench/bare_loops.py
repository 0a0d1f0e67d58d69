"""The compiled limit for the engine benchmark: one cache level, one policy, nothing else.

Each loop replays dense page ids (0..n_pages-1) through a cache of ``frames`` pages and returns the
miss count (cold misses included). No time, no host level, no second VM, no fault costs: the work a
reference needs and nothing more, so that the engine's figure can be read as a fraction of it.

The rules are the engine's guest rules and libCacheSim's (tests/test_bench_loops.py holds them to
the same miss counts):

* LRU: a doubly linked list over the frames, most recently used at the head; a hit moves its
  frame to the head, a miss takes a free frame (lowest first) or the tail's.
* CLOCK: one reference bit per frame and a hand over the frames. A page comes in with its bit
  clear and only a later hit sets it; the hand clears set bits as it passes and stops at the first
  clear one, whose frame takes the new page; the hand then points past it.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def lru_misses(ids, n_pages, frames):
    slot_of = np.full(n_pages, -1, np.int32)      # the dense page table: page -> frame or -1
    page_of = np.empty(frames, np.int32)
    prev = np.empty(frames, np.int32)
    nxt = np.empty(frames, np.int32)
    head = -1
    tail = -1
    used = 0
    misses = 0
    for i in range(ids.shape[0]):
        p = ids[i]
        f = slot_of[p]
        if f >= 0:
            if f != head:                          # unlink (f has a prev), push at the head
                pv = prev[f]
                nx = nxt[f]
                nxt[pv] = nx
                if nx >= 0:
                    prev[nx] = pv
                else:
                    tail = pv
                prev[f] = -1
                nxt[f] = head
                prev[head] = f
                head = f
            continue
        misses += 1
        if used < frames:
            f = used
            used += 1
        else:                                      # evict the tail
            f = tail
            slot_of[page_of[f]] = -1
            tail = prev[f]
            if tail >= 0:
                nxt[tail] = -1
            else:
                head = -1
        page_of[f] = p
        slot_of[p] = f
        prev[f] = -1
        nxt[f] = head
        if head >= 0:
            prev[head] = f
        else:
            tail = f
        head = f
    return misses


@njit(cache=True)
def clock_misses(ids, n_pages, frames):
    slot_of = np.full(n_pages, -1, np.int32)
    page_of = np.empty(frames, np.int32)
    ref = np.zeros(frames, np.uint8)
    hand = 0
    used = 0
    misses = 0
    for i in range(ids.shape[0]):
        p = ids[i]
        f = slot_of[p]
        if f >= 0:
            ref[f] = 1
            continue
        misses += 1
        if used < frames:
            f = used
            used += 1
        else:
            while ref[hand] != 0:
                ref[hand] = 0
                hand += 1
                if hand == frames:
                    hand = 0
            f = hand
            hand += 1
            if hand == frames:
                hand = 0
            slot_of[page_of[f]] = -1
        page_of[f] = p
        slot_of[p] = f
        ref[f] = 0
    return misses


LOOPS = {"lru": lru_misses, "clock": clock_misses}


def bare_misses(ids: np.ndarray, policy: str, frames: int) -> int:
    """Misses of the bare loop of ``policy`` ("lru" or "clock") over dense ``ids``."""
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    n_pages = int(ids.max()) + 1 if len(ids) else 1
    return int(LOOPS[policy](ids, n_pages, int(frames)))
