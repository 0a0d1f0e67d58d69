"""The simulator's state as flat numpy arrays, shared by every VM, so that the compiled kernel can
run over them without Python objects.

Per guest frame (guest-physical page), indexed by ``frame_base[vm] + frame``:
  frame_page  int32  the guest page it holds, or FREE / ABSENT / a free or balloon list link
  lru_prev    int32  guest LRU list (MRU at head), the two side by side in one (frames, 2) array
  lru_next    int32
  host_state  uint8  how the host backs it: UNBACKED, RAM, SHARED, COMPRESSED, SWAPPED, SMART
  flags       uint8  accessed bits and page flags (see the F_* bits)
Per guest page (guest virtual page of the workload), indexed by ``page_base[vm] + page``:
  page_table  int32  the guest frame holding it, or UNTOUCHED / PAGED / PAGED_WRITTEN
A hit reads a frame's host state and flags, and relinks an LRU frame and its two neighbours, so
each pair lives side by side: ``frame_bytes`` (uint8, host state at 2 * frame, flags at
2 * frame + 1) and ``links`` (int32, prev at 2 * frame, next at 2 * frame + 1), one cache line
each; the compiled code indexes them so. ``host_state``, ``flags``, ``lru_prev`` and ``lru_next``
are views of them for numpy code. That is 6 bytes per guest frame (14 when a guest uses LRU) and 4
per guest page. Three arrays exist only when something needs them: the LRU links when a guest uses
LRU, ``fifo`` (int32 per frame, the host's FIFO of backed frames) when a policy picks host victims
FIFO, and ``share_ref`` (int32 per distinct shareable content, the refcounts of content-based
sharing) when pages are shared.

Per-VM, host and device scalars live in small 2-D arrays with named columns (the constants
below); numba folds the constants into the compiled code.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

# frame_page values below zero
FREE = -1            # unmapped and on no list: between the guest's eviction and the frame's reuse
ABSENT = -3          # beyond the memory the VM has been given (hot-add adds frames)
# A frame on the guest's free list or in the balloon holds LIST_MARK - 2 * (next + 1) - kind
# (kind FREE_KIND or BALLOON_KIND; next -1 at the bottom): both lists are stacks chained through
# frame_page itself, so that only LRU guests need lru_next (kernel.list_link, list_next)
LIST_MARK = -4
FREE_KIND, BALLOON_KIND = 0, 1

# page_table values below zero
UNTOUCHED = -1
PAGED = -2           # in the guest page file, content as the image/zero mix says
PAGED_WRITTEN = -3   # in the guest page file, content modified (unique)

# host_state
H_UNBACKED = 0
H_RAM = 1
H_SHARED = 2
H_COMPRESSED = 3
H_SWAPPED = 4
H_SMART = 5

# flags bits
F_ACCESSED = 1       # host-visible accessed bit (host CLOCK clears it)
F_SAMPLE = 2         # touched since the active-memory sampler cleared it
F_GREF = 4           # guest CLOCK reference bit
F_WRITTEN = 8        # content differs from the image/zero it started as: never shareable
F_COPY = 16          # the guest page file holds an up-to-date copy (eviction needs no write)
F_IN_FIFO = 32       # queued in the host FIFO
F_CBIG = 64          # compressed into two 1 KB quarters rather than one
TOUCH_BITS = F_ACCESSED | F_SAMPLE | F_GREF
HOST_BITS = F_ACCESSED | F_SAMPLE | F_IN_FIFO | F_CBIG

# guest replacement
R_LRU, R_CLOCK, R_FIFO = 0, 1, 2
REPLACEMENT_CODES = {"lru": R_LRU, "clock": R_CLOCK, "fifo": R_FIFO}

# host victim strategies
V_RANDOM, V_FIFO, V_CLOCK, V_PLUGIN = 0, 1, 2, 3
VICTIM_CODES = {"random": V_RANDOM, "fifo": V_FIFO, "clock": V_CLOCK, "plugin": V_PLUGIN}

# phase kinds
K_IDLE, K_UNIFORM, K_ZIPF, K_HOTCOLD, K_SCAN, K_TRACE = 0, 1, 2, 3, 4, 5
KIND_CODES = {"idle": K_IDLE, "uniform": K_UNIFORM, "zipf": K_ZIPF, "hotcold": K_HOTCOLD,
              "scan": K_SCAN, "trace": K_TRACE}

# host memory is counted in 1 KB quarters of a page so that compressed pages (1 or 2 KB) fit
Q_PER_PAGE = 4

# --- per-VM integer columns (vm_i) -----------------------------------------------------------
(I_FRAME_BASE, I_NFRAMES, I_PAGE_BASE, I_NPAGES, I_PRESENT,
 I_FREE_HEAD, I_NFREE, I_BALLOON_HEAD, I_NBALLOON, I_LRU_HEAD, I_LRU_TAIL, I_NINUSE,
 I_GHAND, I_REPL, I_HHAND, I_VICTIM, I_SWAP_OK, I_COMPRESS, I_COMP_Q, I_COMP_CAP_Q,
 I_BACKED_Q, I_LIMIT_Q, I_RESIDENT, I_SHARED, I_COMPRESSED, I_SWAPPED, I_SMART, I_SMART_QUOTA,
 I_PAGED, I_PF_SLOTS, I_PF_CAP, I_TOUCHED, I_RUNNING, I_BLOCKED, I_OOM,
 I_PHASE, I_BOOT_PHASE, I_PHASE_FIRST, I_PHASE_END, I_PHASE_REFS, I_REPEAT, I_DONE,
 I_PF_DEV, I_SMART_DEV, I_SLOT_BASE, I_IMAGE_ID, I_IMAGE_PAGES, I_OS_PAGES,
 I_FIFO_HEAD, I_FIFO_LEN, I_SCAN_PTR, I_TARGET_Q, I_MIN_Q, I_SHARE_FIRST, N_I) = range(55)
# I_MIN_Q: the VM's guarantee (ESX min, Hyper-V minimum) in quarters; no reclaim path takes the
# memory it holds (private RAM, compressed quarters, shared frames it maps) below it.
# I_SHARE_FIRST: share before swap (W02 4.3): a host-swap or compression victim whose content
# matches a shared frame is shared instead.

# --- per-VM float columns (vm_f) ---------------------------------------------------------------
# F_BLOCKED: time the VM ran no references, blocked by the policy or waiting for host memory;
# F_MEMORY_WAIT: the second part alone (no VM could give it a page without going below its
# guarantee or its host-swap setting)
(F_CLOCK, F_PHASE_START, F_STALL, F_COMPUTE, F_BLOCKED,
 F_OS_ZERO, F_OS_SHARED, F_OS_COMPRESSIBLE, F_MEMORY_WAIT, N_F) = range(10)

# --- per-VM counters (vm_c), cumulative --------------------------------------------------------
(C_REFS, C_GUEST_FAULT, C_GUEST_PF_READ, C_GUEST_PAGE_OUT, C_HOST_SWAP_IN, C_HOST_SWAP_OUT,
 C_DOUBLE_PAGING, C_COW_BREAK, C_DECOMPRESSION, C_ZERO_FILL, C_COMPRESSION,
 C_SMART_IN, C_SMART_OUT, C_SHARED_BEFORE_SWAP, N_C) = range(15)
COUNTER_NAMES = ("refs", "first_touch", "guest_pagefile_read", "guest_page_out", "host_swap_in",
                 "host_swap_out", "double_paging", "cow_break", "decompression", "zero_fill",
                 "compression", "smart_paging_in", "smart_paging_out", "shared_before_swap")
FAULT_NAMES = COUNTER_NAMES[1:]

# --- host integer columns (host_i) and float columns (host_f) ----------------------------------
# H_SHARED_FRAMES counts host frames holding shared content (those of them with share_ref 1 are
# ESX's "hint" pages: candidates, nothing saved yet)
(H_FREE_Q, H_TOTAL_Q, H_SHARED_FRAMES, H_SWAP_USED, H_SMART_USED, H_SHARE_ON,
 H_FIFO_ON, H_SWAP_DEV, H_RNG, H_MIN_FREE_Q, N_H) = range(11)
# H_MIN_FREE_Q: the free memory the host keeps (a policy's HostDecision.min_free_mb): below it, a
# VM that needs a page is given one only after a VM above its soft target gave one up
(HF_GUEST_FAULT_NS, HF_ZERO_FILL_NS, HF_COW_NS, HF_COMPRESS_NS, HF_DECOMPRESS_NS, N_HF) = range(6)

# --- devices (dev_f) ---------------------------------------------------------------------------
(D_READ_NS, D_WRITE_NS, D_PAR, D_WINDOW_START, D_WORK, D_RHO, N_D) = range(7)
DEVICE_WINDOW_NS = 10e6      # utilization is measured over 10 ms windows of simulated time

# --- phases (ph_i, ph_f) -----------------------------------------------------------------------
(P_KIND, P_START, P_NPAGES, P_REFS, P_TRACE_OFF, P_TRACE_LEN, P_FREE_ON_END, P_HOT_PAGES, N_PI) = range(9)
(P_DURATION_NS, P_WRITE, P_COMPUTE_NS, P_ZIPF_S, P_ZIPF_HX1, P_ZIPF_HN, P_ZIPF_SS,
 P_HOT_PROB, P_ZERO, P_SHARED, P_COMPRESSIBLE, N_PF) = range(12)

NO_LIMIT = np.int64(2) ** 62

# References are drawn this many ahead of their use (a power of two), so that their page table
# entries and frames can be fetched from memory before the loop needs them: ``State.ahead`` holds
# each drawn reference's page, write flag and the VM's random state before it was drawn, which is
# put back for the ones not used when the loop stops (a run draws exactly what it uses).
AHEAD_REFS = 32
# ... but only in a phase over at least this many pages: a smaller one's page table and frames stay
# in the processor's caches, and drawing ahead would cost more than it saves
AHEAD_MIN_PAGES = 1 << 16
AHEAD_PAGE, AHEAD_WRITE, AHEAD_RNG = 0, 1, 2

# A Zipf phase's draws fall in 2**ZIPF_BUCKET_BITS buckets by their top bits; ``State.zipf_ranks``
# holds, per bucket, the rank all its draws give, or 0 where they differ (kernel.zipf_table).
# Phases of the same size and skew share one table, at the phase's P_TRACE_OFF.
ZIPF_BUCKET_BITS = 16
ZIPF_MAX_RANK = 65535

State = namedtuple("State", [
    "page_table", "frame_page", "lru_prev", "lru_next", "host_state", "flags", "fifo", "share_ref",
    "frame_bytes", "links", "vm_i", "vm_f", "vm_c", "host_i", "host_f", "dev_f", "rng", "ph_i", "ph_f", "traces",
    "zipf_ranks", "ahead",
])


def bytes_per_frame(state: State) -> dict[str, int]:
    """Engine memory by structure, for the benchmark's report."""
    return {name: getattr(state, name).nbytes for name in
            ("page_table", "frame_page", "lru_prev", "lru_next", "host_state", "flags", "fifo", "share_ref")}
