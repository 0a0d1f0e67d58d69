"""The compiled per-reference loop and the mechanisms it needs at fault time.

Everything here runs under numba on the flat arrays of ``state.State``. A reference that hits a
guest-resident page backed by host RAM costs a few array updates; the rest (guest page faults,
guest eviction, host faults, reclaiming host memory from another VM) is the slow path and happens
here too, because a fault must be served before the next reference of the same VM.

Return convention for the slow path: a non-negative float is the stall in nanoseconds; BLOCKED
means the VM could get no memory now (it waits for the next slice); OOM means its page file is full.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

from .prefetch import prefetch

from .state import (
    AHEAD_MIN_PAGES, AHEAD_PAGE, AHEAD_REFS, AHEAD_RNG, AHEAD_WRITE, BALLOON_KIND, C_COMPRESSION, C_COW_BREAK, C_DECOMPRESSION, C_DOUBLE_PAGING,
    C_GUEST_FAULT, C_GUEST_PAGE_OUT, C_GUEST_PF_READ, C_HOST_SWAP_IN, C_HOST_SWAP_OUT, C_REFS,
    C_SHARED_BEFORE_SWAP, C_SMART_IN, C_SMART_OUT, C_ZERO_FILL, D_PAR, D_READ_NS, D_RHO, D_WINDOW_START, D_WORK, D_WRITE_NS, DEVICE_WINDOW_NS, F_ACCESSED,
    F_BLOCKED, F_CBIG, F_CLOCK, F_MEMORY_WAIT, F_SAMPLE, F_COMPUTE, F_COPY, F_GREF, F_IN_FIFO, F_OS_COMPRESSIBLE,
    F_OS_SHARED, F_OS_ZERO, F_PHASE_START, F_STALL, F_WRITTEN, FREE, FREE_KIND, H_COMPRESSED, H_FIFO_ON,
    H_FREE_Q, H_MIN_FREE_Q, H_RAM, H_RNG, H_SHARE_ON, H_SHARED, H_SHARED_FRAMES, H_SMART, H_SMART_USED,
    H_SWAP_DEV, H_SWAP_USED, H_SWAPPED, H_UNBACKED, HF_COMPRESS_NS, HF_COW_NS,
    HF_DECOMPRESS_NS, HF_GUEST_FAULT_NS, HF_ZERO_FILL_NS, HOST_BITS, I_BACKED_Q,
    I_BALLOON_HEAD, I_BLOCKED, I_BOOT_PHASE, I_COMP_CAP_Q, I_COMP_Q, I_COMPRESS, I_COMPRESSED,
    I_DONE, I_FIFO_HEAD, I_FIFO_LEN, I_FRAME_BASE, I_FREE_HEAD, I_GHAND, I_HHAND, I_IMAGE_ID,
    I_IMAGE_PAGES, I_LIMIT_Q, I_LRU_HEAD, I_MIN_Q, I_SHARE_FIRST, I_LRU_TAIL, I_NBALLOON, I_NFRAMES, I_NFREE, I_NINUSE,
    I_OOM, I_OS_PAGES, I_PAGE_BASE, I_PAGED, I_PF_CAP, I_PF_DEV, I_PF_SLOTS, I_PHASE,
    I_PHASE_END, I_PHASE_FIRST, I_PHASE_REFS, I_PRESENT, I_REPEAT, I_REPL, I_RESIDENT,
    I_RUNNING, I_SHARED, I_SLOT_BASE, I_SMART, I_SMART_DEV, I_SMART_QUOTA,
    I_SWAP_OK, I_SWAPPED, I_TARGET_Q, I_TOUCHED, I_VICTIM, K_IDLE, K_SCAN, K_TRACE,
    K_UNIFORM, K_ZIPF, P_COMPRESSIBLE, P_COMPUTE_NS, P_DURATION_NS, P_FREE_ON_END,
    P_HOT_PAGES, P_HOT_PROB, P_KIND, P_NPAGES, P_REFS, P_SHARED, P_START, P_TRACE_LEN,
    P_TRACE_OFF, P_WRITE, P_ZERO, P_ZIPF_HN, P_ZIPF_HX1, P_ZIPF_S, P_ZIPF_SS, PAGED,
    LIST_MARK, PAGED_WRITTEN, R_CLOCK, R_LRU, TOUCH_BITS, UNTOUCHED, V_CLOCK, V_FIFO, ZIPF_BUCKET_BITS, ZIPF_MAX_RANK,
)

BLOCKED = -1.0
OOM = -2.0
AHEAD_MASK = AHEAD_REFS - 1

# Compiled without numba's reference counting: nothing here allocates, and counting references to
# the state's arrays on every call of a slow-path function cost about 1 us per page fault (perf
# showed the time in atomic increments and decrements), six times the rest of the fault.
jit = functools.partial(njit, cache=True, _nrt=False)

_U7 = np.uint64(7)
_U11 = np.uint64(11)
_U12 = np.uint64(12)
_U25 = np.uint64(25)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)
_XS_MUL = np.uint64(2685821657736338717)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_INV53 = 1.0 / 9007199254740992.0
_ZIPF_SHIFT = np.uint64(53 - ZIPF_BUCKET_BITS)


@jit(inline="always")
def U(i):
    """An index known to be in range, as numba's unsigned type: numba then adds no code for
    negative indices (a shift, an and, an add and a load of the length at every access)."""
    return np.uint64(i)


# --- a frame's fields ---------------------------------------------------------------------------
# A frame's host state and flags share a cache line in ``frame_bytes``, as an LRU frame's two links
# do in ``links`` (state.py); these name the fields. Inlined, they cost nothing.

@jit(inline="always")
def host_state_of(st, F):
    return st.frame_bytes[U(2 * F)]


@jit(inline="always")
def set_host_state(st, F, hs):
    st.frame_bytes[U(2 * F)] = hs


@jit(inline="always")
def flags_of(st, F):
    return st.frame_bytes[U(2 * F + 1)]


@jit(inline="always")
def set_flags(st, F, fl):
    st.frame_bytes[U(2 * F + 1)] = fl


@jit(inline="always")
def add_flags(st, F, bits):
    st.frame_bytes[U(2 * F + 1)] |= bits


@jit(inline="always")
def clear_flags(st, F, bits):
    st.frame_bytes[U(2 * F + 1)] &= ~bits


@jit(inline="always")
def keep_flags(st, F, bits):
    st.frame_bytes[U(2 * F + 1)] &= bits


@jit(inline="always")
def lru_prev_of(st, F):
    return np.int64(st.links[U(2 * F)])


@jit(inline="always")
def lru_next_of(st, F):
    return np.int64(st.links[U(2 * F + 1)])


@jit(inline="always")
def set_lru_prev(st, F, f):
    st.links[U(2 * F)] = f


@jit(inline="always")
def set_lru_next(st, F, f):
    st.links[U(2 * F + 1)] = f


# --- randomness and hashing ---------------------------------------------------------------------

@jit(inline="always")
def rand_u64(rng, i):
    """xorshift64*: one independent stream per VM plus one for the host, so runs repeat exactly."""
    x = rng[i]
    x ^= x >> _U12
    x ^= x << _U25
    x ^= x >> _U27
    rng[i] = x
    return x * _XS_MUL


@jit(inline="always")
def rand_float(rng, i):
    return np.float64(rand_u64(rng, i) >> _U11) * _INV53


@jit(inline="always")
def rand_below(rng, i, n):
    return np.int64(rand_u64(rng, i) % np.uint64(n))


@jit(inline="always")
def mix64(z):
    """splitmix64's finalizer: page contents and compressibility are pure functions of page ids."""
    z = z + _GOLDEN
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


@jit(inline="always")
def unit_hash(z):
    return np.float64(mix64(z) >> _U11) * _INV53


# --- devices ------------------------------------------------------------------------------------

@jit(inline="always")
def device_io(st, d, t, write):
    """Latency of one 4 KiB I/O issued at time t: the device's latency plus queueing, from its
    utilization rho as a queue with ``parallelism`` servers, wait = (latency / P) * rho / (1 - rho).
    Utilization is the device time asked of it in the current and the previous 10 ms window,
    not an ordered queue: VMs run one after another within a slice, so I/Os arrive out of time
    order, and a "busy until" pointer would make a VM wait behind I/O issued in its future."""
    lat = st.dev_f[d, D_WRITE_NS] if write else st.dev_f[d, D_READ_NS]
    par = st.dev_f[d, D_PAR]
    start = st.dev_f[d, D_WINDOW_START]
    if t >= start + DEVICE_WINDOW_NS:
        windows = math.floor((t - start) / DEVICE_WINDOW_NS)
        st.dev_f[d, D_RHO] = st.dev_f[d, D_WORK] / (DEVICE_WINDOW_NS * par) if windows == 1 else 0.0
        st.dev_f[d, D_WORK] = 0.0
        st.dev_f[d, D_WINDOW_START] = start + windows * DEVICE_WINDOW_NS
    st.dev_f[d, D_WORK] += lat
    rho = max(st.dev_f[d, D_RHO], st.dev_f[d, D_WORK] / (DEVICE_WINDOW_NS * par))
    if rho > 0.98:
        rho = 0.98
    return lat + lat / par * rho / (1.0 - rho)


# --- page content -------------------------------------------------------------------------------

@jit
def content_mix(st, v, page):
    """(zero, shared, compressible) fractions of the region that holds ``page``."""
    if page < st.vm_i[v, I_OS_PAGES]:
        return st.vm_f[v, F_OS_ZERO], st.vm_f[v, F_OS_SHARED], st.vm_f[v, F_OS_COMPRESSIBLE]
    for p in range(st.vm_i[v, I_PHASE_FIRST], st.vm_i[v, I_PHASE_END]):
        start = st.ph_i[p, P_START]
        if start <= page < start + st.ph_i[p, P_NPAGES]:
            return st.ph_f[p, P_ZERO], st.ph_f[p, P_SHARED], st.ph_f[p, P_COMPRESSIBLE]
    return 0.0, 0.0, 0.5


@jit
def content_key(st, v, page):
    # the image id, not the VM, goes into the hash: two VMs of one image hold the same content
    return np.uint64(page) * np.uint64(0x100000001B3) ^ (np.uint64(st.vm_i[v, I_IMAGE_ID]) << np.uint64(48))


@jit
def content_slot(st, v, page, fl):
    """The share_ref slot of the page's content, or -1 if it is unique (never shareable)."""
    if st.host_i[H_SHARE_ON] == 0 or (fl & F_WRITTEN) != 0 or page < 0:
        return -1
    zero, shared, _ = content_mix(st, v, page)
    key = content_key(st, v, page)
    r = unit_hash(key)
    base = st.vm_i[v, I_SLOT_BASE]
    if r < zero:
        return base
    if r < zero + shared:
        return base + 1 + np.int64(mix64(key ^ _MIX1) % np.uint64(st.vm_i[v, I_IMAGE_PAGES]))
    return -1


@jit
def compressed_quarters(st, v, page, frame, fl):
    """How many 1 KB quarters the page compresses into: 1 or 2, or 0 if it does not fit in 2 KB."""
    if page < 0:   # a free guest frame: stale data of unknown kind
        key = np.uint64(frame) * np.uint64(0x9E3779B1) ^ np.uint64(v + 1)
        compressible = 0.5
        zero = 0.0
    else:
        zero, _, compressible = content_mix(st, v, page)
        key = content_key(st, v, page)
        if (fl & F_WRITTEN) != 0:
            zero = 0.0
            key = key ^ np.uint64(0xABCDEF)
    if unit_hash(key) < zero:
        return 1
    r = unit_hash(key ^ _MIX2)
    if r < compressible * 0.5:
        return 1
    if r < compressible:
        return 2
    return 0


# --- guest lists --------------------------------------------------------------------------------

@jit(inline="always")
def lru_unlink(st, v, fb, f):
    p = lru_prev_of(st, fb + f)
    n = lru_next_of(st, fb + f)
    if p >= 0:
        set_lru_next(st, fb + p, n)
    else:
        st.vm_i[v, I_LRU_HEAD] = n
    if n >= 0:
        set_lru_prev(st, fb + n, p)
    else:
        st.vm_i[v, I_LRU_TAIL] = p


@jit(inline="always")
def lru_push_front(st, v, fb, f):
    h = st.vm_i[v, I_LRU_HEAD]
    set_lru_prev(st, fb + f, -1)
    set_lru_next(st, fb + f, h)
    if h >= 0:
        set_lru_prev(st, fb + h, f)
    else:
        st.vm_i[v, I_LRU_TAIL] = f
    st.vm_i[v, I_LRU_HEAD] = f


@jit(inline="always")
def list_link(nxt, kind):
    """What frame_page holds for a frame on a free (FREE_KIND) or balloon list above ``nxt``."""
    return LIST_MARK - 2 * (nxt + 1) - kind


@jit(inline="always")
def list_next(mark):
    return (LIST_MARK - mark) // 2 - 1


@jit(inline="always")
def is_ballooned(mark):
    return mark <= LIST_MARK and (LIST_MARK - mark) % 2 == BALLOON_KIND


@jit(inline="always")
def stack_push(st, v, fb, f, head, count, kind):
    st.frame_page[U(fb + f)] = list_link(st.vm_i[v, head], kind)
    st.vm_i[v, head] = f
    st.vm_i[v, count] += 1


@jit(inline="always")
def stack_pop(st, v, fb, head, count):
    f = st.vm_i[v, head]
    st.vm_i[v, head] = list_next(np.int64(st.frame_page[U(fb + f)]))
    st.vm_i[v, count] -= 1
    return f


@jit(inline="always")
def free_push(st, v, fb, f):
    stack_push(st, v, fb, f, I_FREE_HEAD, I_NFREE, FREE_KIND)


@jit(inline="always")
def free_pop(st, v, fb):
    return stack_pop(st, v, fb, I_FREE_HEAD, I_NFREE)


@jit
def balloon_push(st, v, fb, f):
    stack_push(st, v, fb, f, I_BALLOON_HEAD, I_NBALLOON, BALLOON_KIND)


@jit
def balloon_pop(st, v, fb):
    return stack_pop(st, v, fb, I_BALLOON_HEAD, I_NBALLOON)


@jit
def fifo_push(st, v, fb, f):
    if st.host_i[H_FIFO_ON] == 0 or (flags_of(st, fb + f) & F_IN_FIFO) != 0:
        return
    n = st.vm_i[v, I_NFRAMES]
    pos = (st.vm_i[v, I_FIFO_HEAD] + st.vm_i[v, I_FIFO_LEN]) % n
    st.fifo[fb + pos] = f
    st.vm_i[v, I_FIFO_LEN] += 1
    add_flags(st, fb + f, F_IN_FIFO)


# --- host backing -------------------------------------------------------------------------------

@jit
def unshare(st, v, fb, f, page, fl):
    """The guest frame stops holding the shared content (its page leaves or is overwritten). The
    last holder of a content keeps the host frame as private RAM; otherwise the frame loses its
    backing and needs a new host page when the guest writes it next."""
    slot = content_slot(st, v, page, fl)
    st.vm_i[v, I_SHARED] -= 1
    st.share_ref[slot] -= 1
    if st.share_ref[slot] == 0:
        st.host_i[H_SHARED_FRAMES] -= 1
        set_host_state(st, fb + f, H_RAM)
        st.vm_i[v, I_BACKED_Q] += 4
        st.vm_i[v, I_RESIDENT] += 1
        fifo_push(st, v, fb, f)
    else:
        set_host_state(st, fb + f, H_UNBACKED)


@jit
def release_backing(st, v, fb, f):
    """Drop the host backing of a guest frame that holds no page (ballooned, reset)."""
    hs = host_state_of(st, fb + f)
    if hs == H_RAM:
        st.vm_i[v, I_BACKED_Q] -= 4
        st.host_i[H_FREE_Q] += 4
        st.vm_i[v, I_RESIDENT] -= 1
    elif hs == H_COMPRESSED:
        q = 2 if (flags_of(st, fb + f) & F_CBIG) != 0 else 1
        st.vm_i[v, I_BACKED_Q] -= q
        st.vm_i[v, I_COMP_Q] -= q
        st.host_i[H_FREE_Q] += q
        st.vm_i[v, I_COMPRESSED] -= 1
    elif hs == H_SWAPPED:
        st.vm_i[v, I_SWAPPED] -= 1
        st.host_i[H_SWAP_USED] -= 1
    elif hs == H_SMART:
        st.vm_i[v, I_SMART] -= 1
        st.host_i[H_SMART_USED] -= 1
    set_host_state(st, fb + f, H_UNBACKED)
    clear_flags(st, fb + f, F_CBIG)


@jit
def backing_quarters(st, F):
    """Host quarters guest frame F holds: 4 in RAM or in a Smart Paging file, 1 or 2 compressed,
    0 otherwise (unbacked, shared, host-swapped)."""
    hs = host_state_of(st, F)
    if hs == H_RAM or hs == H_SMART:
        return 4
    if hs == H_COMPRESSED:
        return 2 if (flags_of(st, F) & F_CBIG) != 0 else 1
    return 0


@jit(inline="always")
def held_q(st, u):
    """Host memory VM u holds, in quarters: private RAM, its compression cache at compressed size,
    the shared frames it maps (each counted whole: the guest uses it at RAM speed), and its Smart
    Paging file (its own memory, which Hyper-V backs on disk only to get it through a restart)."""
    return st.vm_i[u, I_BACKED_Q] + 4 * (st.vm_i[u, I_SHARED] + st.vm_i[u, I_SMART])


@jit(inline="always")
def may_take(st, u, q):
    """May a reclaim path take ``q`` quarters from VM u? Not below its guarantee (I_MIN_Q)."""
    return held_q(st, u) - q >= st.vm_i[u, I_MIN_Q]


@jit
def share_frame(st, v, F, slot):
    """Map guest frame F (backed by private RAM) of VM v onto the host frame holding its content.
    The first holder of a content becomes that frame (ESX's hint: nothing saved yet); each later
    one frees its own host page. Returns True if a host page was freed."""
    set_host_state(st, F, H_SHARED)
    st.vm_i[v, I_RESIDENT] -= 1
    st.vm_i[v, I_SHARED] += 1
    st.vm_i[v, I_BACKED_Q] -= 4
    freed = st.share_ref[slot] > 0
    if freed:
        st.host_i[H_FREE_Q] += 4
    else:
        st.host_i[H_SHARED_FRAMES] += 1
    st.share_ref[slot] += 1
    return freed


@jit
def pick_host_victim(st, u):
    """A guest frame of VM u backed by private host RAM, chosen by u's strategy; -1 if none."""
    if st.vm_i[u, I_RESIDENT] == 0:
        return -1
    fb = st.vm_i[u, I_FRAME_BASE]
    present = st.vm_i[u, I_PRESENT]
    strategy = st.vm_i[u, I_VICTIM]
    if strategy == V_FIFO and st.host_i[H_FIFO_ON] != 0:
        n = st.vm_i[u, I_NFRAMES]
        while st.vm_i[u, I_FIFO_LEN] > 0:
            f = st.fifo[fb + st.vm_i[u, I_FIFO_HEAD]]
            st.vm_i[u, I_FIFO_HEAD] = (st.vm_i[u, I_FIFO_HEAD] + 1) % n
            st.vm_i[u, I_FIFO_LEN] -= 1
            clear_flags(st, fb + f, F_IN_FIFO)
            if host_state_of(st, fb + f) == H_RAM:
                return f
    elif strategy == V_CLOCK:
        hand = st.vm_i[u, I_HHAND]
        for _ in range(2 * present + 1):
            f = hand
            hand += 1
            if hand >= present:
                hand = 0
            if host_state_of(st, fb + f) == H_RAM:
                if (flags_of(st, fb + f) & F_ACCESSED) != 0:
                    clear_flags(st, fb + f, F_ACCESSED)
                else:
                    st.vm_i[u, I_HHAND] = hand
                    return f
        st.vm_i[u, I_HHAND] = hand
    # random (ESX's choice: blind, and immune to pathological interplay with the guest's LRU)
    for _ in range(64):
        f = rand_below(st.rng, st.host_i[H_RNG], present)
        if host_state_of(st, fb + f) == H_RAM:
            return f
    start = rand_below(st.rng, st.host_i[H_RNG], present)
    for i in range(present):
        f = (start + i) % present
        if host_state_of(st, fb + f) == H_RAM:
            return f
    return -1


@jit
def evict_to_host_storage(st, u, f, t, to_smart):
    """Take host RAM away from guest frame f of VM u: share it if u shares before swapping and its
    content has a frame, else compress it if u allows and it fits in the cache, else write it to
    the Smart Paging file or the host swap file. Returns the time spent."""
    fb = st.vm_i[u, I_FRAME_BASE]
    F = fb + f
    if not to_smart and st.vm_i[u, I_SHARE_FIRST] != 0:
        # W02 4.3: try to share a page before paging it out
        slot = content_slot(st, u, st.frame_page[F], flags_of(st, F))
        if slot >= 0:
            if share_frame(st, u, F, slot):
                st.vm_c[u, C_SHARED_BEFORE_SWAP] += 1
            return 0.0
    if not to_smart and st.vm_i[u, I_COMPRESS] != 0:
        page = st.frame_page[F]
        q = compressed_quarters(st, u, page, f, flags_of(st, F))
        if q > 0 and st.vm_i[u, I_COMP_Q] + q <= st.vm_i[u, I_COMP_CAP_Q]:
            set_host_state(st, F, H_COMPRESSED)
            if q == 2:
                add_flags(st, F, F_CBIG)
            else:
                clear_flags(st, F, F_CBIG)
            st.vm_i[u, I_COMP_Q] += q
            st.vm_i[u, I_BACKED_Q] -= 4 - q
            st.host_i[H_FREE_Q] += 4 - q
            st.vm_i[u, I_RESIDENT] -= 1
            st.vm_i[u, I_COMPRESSED] += 1
            st.vm_c[u, C_COMPRESSION] += 1
            return st.host_f[HF_COMPRESS_NS]
    st.vm_i[u, I_BACKED_Q] -= 4
    st.host_i[H_FREE_Q] += 4
    st.vm_i[u, I_RESIDENT] -= 1
    if to_smart:
        set_host_state(st, F, H_SMART)
        st.vm_i[u, I_SMART] += 1
        st.host_i[H_SMART_USED] += 1
        st.vm_c[u, C_SMART_OUT] += 1
        return device_io(st, st.vm_i[u, I_SMART_DEV], t, True)
    set_host_state(st, F, H_SWAPPED)
    st.vm_i[u, I_SWAPPED] += 1
    st.host_i[H_SWAP_USED] += 1
    st.vm_c[u, C_HOST_SWAP_OUT] += 1
    return device_io(st, st.host_i[H_SWAP_DEV], t, True)


@jit
def smart_room(st, v):
    return st.vm_i[v, I_SMART] < st.vm_i[v, I_SMART_QUOTA]


@jit(inline="always")
def reclaimable(st, u, v, self_ok):
    """May VM u give a host page to VM v? It must run, allow host swap, hold private RAM, and stay
    at or above its guarantee; v itself may give one below that when the page it gets back leaves
    its holding as it was (``self_ok``: a page faulted in, not a copy-on-write break)."""
    return (st.vm_i[u, I_RUNNING] != 0 and st.vm_i[u, I_SWAP_OK] != 0 and st.vm_i[u, I_RESIDENT] > 0
            and (may_take(st, u, 4) or (u == v and self_ok)))


@jit
def furthest_above_target(st, v, self_ok):
    """The VM that may give v a page and holds most above its soft target; -1 if none is above."""
    best = -1
    best_excess = np.int64(0)
    for u in range(st.vm_i.shape[0]):
        if reclaimable(st, u, v, self_ok):
            excess = held_q(st, u) - st.vm_i[u, I_TARGET_Q]
            if excess > best_excess:
                best = u
                best_excess = excess
    return best


@jit
def reclaim_target(st, v, self_ok):
    """Which VM gives up a host page when v needs one and none is free: the swap-allowed VM
    furthest above its host target (the policy's soft target, e.g. ESX's share-based one), else
    v's own Smart Paging allowance, else the swap-allowed VM holding the most host memory. No VM
    gives a page below its guarantee. -1: nobody can (v blocks until memory frees up)."""
    # v below its guarantee (the guest dropped a shared page) takes from others before itself
    below = held_q(st, v) < st.vm_i[v, I_MIN_Q]
    others_first = self_ok and not below
    best = furthest_above_target(st, v, others_first)
    if best >= 0:
        return best
    if smart_room(st, v) and st.vm_i[v, I_RESIDENT] > 0:
        return v
    most = np.int64(0)
    for u in range(st.vm_i.shape[0]):
        if reclaimable(st, u, v, others_first):
            if st.vm_i[u, I_BACKED_Q] > most:
                best = u
                most = st.vm_i[u, I_BACKED_Q]
    if best < 0 and below and reclaimable(st, v, v, self_ok):
        best = v
    return best


@jit
def obtain_host_page(st, v, t, gain):
    """Account one more private host page to VM v, reclaiming one from some VM if needed.
    ``gain``: quarters by which v's holding grows once the page is its (4 for a zero fill or a
    swap-in, less for a decompression, 0 for a copy-on-write break or a Smart Paging read). v may
    pay with one of its own pages only if that keeps it at or above its guarantee."""
    stall = 0.0
    for _ in range(64):
        self_ok = may_take(st, v, 4 - gain)      # again each time: v may have paid already
        over = st.vm_i[v, I_BACKED_Q] + 4 > st.vm_i[v, I_LIMIT_Q]
        if over and not self_ok and st.vm_i[v, I_SMART_QUOTA] == 0:
            over = False      # at its guarantee the limit yields: paging itself would go below
        if not over and st.host_i[H_FREE_Q] >= 4:
            if st.host_i[H_FREE_Q] - 4 < st.host_i[H_MIN_FREE_Q]:
                # below the host's free reserve: a VM above its target pays for this page, so
                # reclaim keeps pace with demand instead of free memory running out (ESX hard state)
                u = furthest_above_target(st, v, self_ok)
                if u >= 0:
                    f = pick_host_victim(st, u)
                    if f >= 0:
                        stall += evict_to_host_storage(st, u, f, t + stall, False)
            st.host_i[H_FREE_Q] -= 4
            st.vm_i[v, I_BACKED_Q] += 4
            return stall
        to_smart = False
        if over:
            # over its own limit (ESX limit, cgroup memory.max): it pages itself
            if st.vm_i[v, I_SWAP_OK] != 0:
                u = v
            elif smart_room(st, v):
                u = v
                to_smart = True
            else:
                return BLOCKED
        else:
            u = reclaim_target(st, v, self_ok)
            if u < 0:
                return BLOCKED
            to_smart = u == v and st.vm_i[v, I_SWAP_OK] == 0
        f = pick_host_victim(st, u)
        if f < 0:
            return BLOCKED
        stall += evict_to_host_storage(st, u, f, t + stall, to_smart)
    return BLOCKED


@jit
def host_fault_in(st, v, fb, f, t):
    """Give guest frame f of VM v host RAM: zero-fill, swap-in, Smart Paging read or
    decompression, by where its content is."""
    F = fb + f
    hs = host_state_of(st, F)
    # what v's holding grows by: a page less what the frame already held (compressed, Smart Paged)
    stall = obtain_host_page(st, v, t, 4 - backing_quarters(st, F))
    if stall < 0.0:
        return BLOCKED
    if hs == H_SWAPPED:
        stall += device_io(st, st.host_i[H_SWAP_DEV], t + stall, False)
        st.vm_c[v, C_HOST_SWAP_IN] += 1
        st.vm_i[v, I_SWAPPED] -= 1
        st.host_i[H_SWAP_USED] -= 1
    elif hs == H_SMART:
        stall += device_io(st, st.vm_i[v, I_SMART_DEV], t + stall, False)
        st.vm_c[v, C_SMART_IN] += 1
        st.vm_i[v, I_SMART] -= 1
        st.host_i[H_SMART_USED] -= 1
    elif hs == H_COMPRESSED:
        q = 2 if (flags_of(st, F) & F_CBIG) != 0 else 1
        clear_flags(st, F, F_CBIG)
        st.vm_i[v, I_BACKED_Q] -= q
        st.vm_i[v, I_COMP_Q] -= q
        st.host_i[H_FREE_Q] += q
        st.vm_i[v, I_COMPRESSED] -= 1
        stall += st.host_f[HF_DECOMPRESS_NS]
        st.vm_c[v, C_DECOMPRESSION] += 1
    else:
        stall += st.host_f[HF_ZERO_FILL_NS]
        st.vm_c[v, C_ZERO_FILL] += 1
    set_host_state(st, F, H_RAM)
    st.vm_i[v, I_RESIDENT] += 1
    fifo_push(st, v, fb, f)
    return stall


@jit
def cow_break(st, v, fb, f, page, fl, t):
    """A write to a shared page: the writer gets a private copy; the last holder just keeps it."""
    slot = content_slot(st, v, page, fl)
    if st.share_ref[slot] == 1:
        st.share_ref[slot] = 0
        st.host_i[H_SHARED_FRAMES] -= 1
        st.vm_i[v, I_SHARED] -= 1
        st.vm_i[v, I_BACKED_Q] += 4
        st.vm_i[v, I_RESIDENT] += 1
        set_host_state(st, fb + f, H_RAM)
        fifo_push(st, v, fb, f)
        return 0.0
    stall = obtain_host_page(st, v, t, 0)
    if stall < 0.0:
        return BLOCKED
    st.share_ref[slot] -= 1
    st.vm_i[v, I_SHARED] -= 1
    st.vm_i[v, I_RESIDENT] += 1
    set_host_state(st, fb + f, H_RAM)
    st.vm_c[v, C_COW_BREAK] += 1
    fifo_push(st, v, fb, f)
    return stall + st.host_f[HF_COW_NS]


# --- the guest ----------------------------------------------------------------------------------

@jit(inline="always")
def guest_victim(st, v, fb):
    """The guest's own replacement choice among its in-use frames."""
    repl = st.vm_i[v, I_REPL]
    if repl == R_LRU:
        return st.vm_i[v, I_LRU_TAIL]
    present = st.vm_i[v, I_PRESENT]
    hand = st.vm_i[v, I_GHAND]
    while True:
        f = hand
        hand += 1
        if hand >= present:
            hand = 0
        if st.frame_page[U(fb + f)] >= 0:
            if repl == R_CLOCK and (flags_of(st, fb + f) & F_GREF) != 0:
                clear_flags(st, fb + f, F_GREF)
                continue
            st.vm_i[v, I_GHAND] = hand
            return f


@jit(inline="always")
def guest_evict(st, v, fb, pb, t):
    """The guest pages out its victim to its own page file. Returns (frame, stall); the frame
    is left unmapped and on no list. Evicting a page that the host has swapped out is double
    paging: the host reads it back in only so that the guest can write it out."""
    if st.vm_i[v, I_NINUSE] == 0:
        return -1, BLOCKED
    f = guest_victim(st, v, fb)
    F = fb + f
    page = st.frame_page[F]
    fl = flags_of(st, F)
    stall = 0.0
    if (fl & F_COPY) == 0:
        hs = host_state_of(st, F)
        if hs != H_RAM and hs != H_SHARED:
            if hs == H_SWAPPED or hs == H_SMART:
                st.vm_c[v, C_DOUBLE_PAGING] += 1
            s = host_fault_in(st, v, fb, f, t)
            if s < 0.0:
                return -1, BLOCKED
            stall += s
        if st.vm_i[v, I_PF_SLOTS] >= st.vm_i[v, I_PF_CAP]:
            st.vm_i[v, I_OOM] = 1
            return -1, OOM
        stall += device_io(st, st.vm_i[v, I_PF_DEV], t + stall, True)
        st.vm_i[v, I_PF_SLOTS] += 1
        st.vm_c[v, C_GUEST_PAGE_OUT] += 1
    if st.vm_i[v, I_REPL] == R_LRU:
        lru_unlink(st, v, fb, f)
    if host_state_of(st, F) == H_SHARED:
        unshare(st, v, fb, f, page, fl)
    st.page_table[pb + page] = PAGED_WRITTEN if (fl & F_WRITTEN) != 0 else PAGED
    st.frame_page[F] = FREE
    keep_flags(st, F, HOST_BITS)   # re-read: the host bits may have changed while faulting it in
    st.vm_i[v, I_NINUSE] -= 1
    st.vm_i[v, I_PAGED] += 1
    return f, stall


@jit(inline="always")
def guest_page_fault(st, v, fb, pb, page, t):
    """Bring ``page`` into a guest frame: a free one, else the guest's victim. The frame is then
    written by the guest (zeroed or read from the page file), so the host must back it."""
    stall = 0.0
    if st.vm_i[v, I_NFREE] > 0:
        f = free_pop(st, v, fb)
    else:
        f, s = guest_evict(st, v, fb, pb, t)
        if f < 0:
            return s
        stall = s
    F = fb + f
    if host_state_of(st, F) != H_RAM:
        s = host_fault_in(st, v, fb, f, t + stall)
        if s < 0.0:
            free_push(st, v, fb, f)
            return BLOCKED
        stall += s
    G = pb + page
    old = st.page_table[G]
    if old == UNTOUCHED:
        st.vm_c[v, C_GUEST_FAULT] += 1
        st.vm_i[v, I_TOUCHED] += 1
        stall += st.host_f[HF_GUEST_FAULT_NS]
        new_flags = 0
    else:
        stall += device_io(st, st.vm_i[v, I_PF_DEV], t + stall, False)
        st.vm_c[v, C_GUEST_PF_READ] += 1
        st.vm_i[v, I_PAGED] -= 1
        new_flags = F_COPY | (F_WRITTEN if old == PAGED_WRITTEN else 0)
    st.page_table[G] = f
    st.frame_page[F] = page
    set_flags(st, F, (flags_of(st, F) & HOST_BITS) | new_flags)
    st.vm_i[v, I_NINUSE] += 1
    if st.vm_i[v, I_REPL] == R_LRU:
        lru_push_front(st, v, fb, f)
    return stall


@jit(inline="always")
def access(st, v, fb, pb, repl, page, write, t):
    """One memory reference. Returns the stall it caused (ns), or BLOCKED / OOM."""
    f = st.page_table[pb + page]
    stall = 0.0
    touch = TOUCH_BITS
    if f < 0:
        stall = guest_page_fault(st, v, fb, pb, page, t)
        if stall < 0.0:
            return stall
        f = st.page_table[pb + page]
        # a page comes in with its guest reference bit clear (libCacheSim's CLOCK does the same):
        # only a later hit gives it a second chance
        touch = F_ACCESSED | F_SAMPLE
    F = fb + f
    hs = host_state_of(st, F)
    if hs != H_RAM and hs != H_SHARED:
        s = host_fault_in(st, v, fb, f, t + stall)
        if s < 0.0:
            return s
        stall += s
    add_flags(st, F, touch)
    fl = flags_of(st, F)
    if write and (fl & (F_WRITTEN | F_COPY)) != F_WRITTEN:
        if host_state_of(st, F) == H_SHARED:
            s = cow_break(st, v, fb, f, page, fl, t + stall)
            if s < 0.0:
                return s
            stall += s
        if (fl & F_COPY) != 0:
            st.vm_i[v, I_PF_SLOTS] -= 1   # the page file copy is stale now; its slot is freed
        # cow_break may have queued the frame in the host FIFO: update, do not overwrite
        set_flags(st, F, (flags_of(st, F) | F_WRITTEN) & ~F_COPY)
    if repl == R_LRU and st.vm_i[v, I_LRU_HEAD] != f:
        lru_unlink(st, v, fb, f)
        lru_push_front(st, v, fb, f)
    return stall


@jit
def free_pages(st, v, start, n):
    """The guest frees a range of its pages (a process exits, memory is unmapped). The frames go
    back to the guest's free list still backed by the host: only a balloon or free page reporting
    gives that host memory back."""
    fb = st.vm_i[v, I_FRAME_BASE]
    pb = st.vm_i[v, I_PAGE_BASE]
    for page in range(start, start + n):
        pt = st.page_table[pb + page]
        if pt >= 0:
            F = fb + pt
            fl = flags_of(st, F)
            if host_state_of(st, F) == H_SHARED:
                unshare(st, v, fb, pt, page, fl)
            if (fl & F_COPY) != 0:
                st.vm_i[v, I_PF_SLOTS] -= 1
            if st.vm_i[v, I_REPL] == R_LRU:
                lru_unlink(st, v, fb, pt)
            keep_flags(st, F, HOST_BITS)
            free_push(st, v, fb, pt)
            st.vm_i[v, I_NINUSE] -= 1
            st.vm_i[v, I_TOUCHED] -= 1
        elif pt == PAGED or pt == PAGED_WRITTEN:
            st.vm_i[v, I_PF_SLOTS] -= 1
            st.vm_i[v, I_PAGED] -= 1
            st.vm_i[v, I_TOUCHED] -= 1
        st.page_table[pb + page] = UNTOUCHED


# --- workload generation ------------------------------------------------------------------------

@jit
def _zipf_h_integral(x, s):
    log_x = math.log(x)
    t = (1.0 - s) * log_x
    if abs(t) > 1e-8:
        helper = math.expm1(t) / t
    else:
        helper = 1.0 + t * 0.5 * (1.0 + t / 3.0 * (1.0 + 0.25 * t))
    return helper * log_x


@jit
def _zipf_h_integral_inverse(x, s):
    t = x * (1.0 - s)
    if t < -1.0:
        t = -1.0
    if abs(t) > 1e-8:
        helper = math.log1p(t) / t
    else:
        helper = 1.0 - t * (0.5 - t * (1.0 / 3.0 - 0.25 * t))
    return math.exp(helper * x)


@jit
def zipf_constants(n, s):
    """Constants of rejection-inversion sampling (Hoermann and Derflinger 1996) for ranks 1..n."""
    hx1 = _zipf_h_integral(1.5, s) - 1.0
    hn = _zipf_h_integral(n + 0.5, s)
    ss = 2.0 - _zipf_h_integral_inverse(_zipf_h_integral(2.5, s) - math.exp(-s * math.log(2.0)), s)
    return hx1, hn, ss


@jit
def zipf_rank(rng, i, n, s, hx1, hn, ss, table, toff):
    """A Zipf(s) rank in 1..n in O(1) expected time. ``table`` from ``toff`` (zipf_table, one
    entry per bucket of draws) answers the draws whose bucket gives one rank without a logarithm
    or an exponential; the others are computed. Either way it is the rank the computation gives."""
    while True:
        bits = rand_u64(rng, i) >> _U11
        k = np.int64(table[toff + np.int64(bits >> _ZIPF_SHIFT)])
        if k == 0:
            u = hn + np.float64(bits) * _INV53 * (hx1 - hn)
            x = _zipf_h_integral_inverse(u, s)
            k = np.int64(x + 0.5)
            if k < 1:
                k = 1
            elif k > n:
                k = n
            if not (k - x <= ss or u >= _zipf_h_integral(k + 0.5, s) - math.exp(-s * math.log(k))):
                continue
        return k


@jit
def zipf_table(n, s, hx1, hn, ss, out):
    """Fill ``out`` (2**ZIPF_BUCKET_BITS entries) for zipf_rank: the draws of bucket b (the top bits of
    the 53 that make the uniform) give u in a closed interval, since u is monotone in the draw;
    where the ranks computed at both ends agree and both are accepted on the first test, with a
    margin of a billionth of the rank to either edge (the computed inverse is within a few ulps
    of the true one, which is monotone), every draw between gives that rank. 0 elsewhere."""
    for b in range(out.shape[0]):
        first = np.uint64(b) << _ZIPF_SHIFT
        last = first + ((np.uint64(1) << _ZIPF_SHIFT) - np.uint64(1))
        x0 = _zipf_h_integral_inverse(hn + np.float64(first) * _INV53 * (hx1 - hn), s)
        x1 = _zipf_h_integral_inverse(hn + np.float64(last) * _INV53 * (hx1 - hn), s)
        lo = min(x0, x1)
        hi = max(x0, x1)
        k = np.int64(lo + 0.5)
        margin = 1e-9 * k
        out[b] = 0
        if (1 <= k <= n and k <= ZIPF_MAX_RANK and np.int64(hi + 0.5) == k and lo >= k - ss + margin
                and lo >= k - 0.5 + margin and hi <= k + 0.5 - margin):
            out[b] = k


# --- drawing references ---------------------------------------------------------------------------

@jit(inline="always")
def draw_page(rng, v, traces, zipf_ranks, kind, start, npages, toff, gidx, zs, zhx1, zhn, zss, hot, hot_prob):
    """The page of VM v's next reference in its phase (``gidx``: the position in a trace or scan)."""
    if kind == K_TRACE:
        return start + traces[toff + gidx]
    if kind == K_SCAN:
        return start + gidx
    if kind == K_UNIFORM:
        return start + rand_below(rng, v, npages)
    if kind == K_ZIPF:
        return start + zipf_rank(rng, v, npages, zs, zhx1, zhn, zss, zipf_ranks, toff) - 1
    if rand_float(rng, v) < hot_prob:   # K_HOTCOLD
        return start + rand_below(rng, v, hot)
    return start + hot + rand_below(rng, v, npages - hot)


@jit(inline="always")
def draw_reference(rng, v, traces, zipf_ranks, kind, start, npages, toff, gidx, wrap, zs, zhx1, zhn, zss, hot,
                   hot_prob, wr):
    """VM v's next reference: (page, write, the position after it in a trace or scan)."""
    page = draw_page(rng, v, traces, zipf_ranks, kind, start, npages, toff, gidx, zs, zhx1, zhn, zss, hot, hot_prob)
    gidx += 1
    if gidx == wrap:
        gidx = 0
    if wr <= 0.0:
        write = False
    elif wr >= 1.0:
        write = True
    else:
        write = rand_float(rng, v) < wr
    return page, write, gidx


@jit(inline="always")
def prefetch_ahead(page_table, frame_bytes, links, ahead, fb, pb, head, repl):
    """Fetch what the references drawn ahead will need, each stage once the previous one's data
    has arrived: half the window ahead, the frame of the page (its page table entry was fetched
    when it was drawn); a quarter ahead, for LRU guests, the frame's neighbours in the list, which
    a hit relinks. The list may change before then: a prefetch is a hint, never a read."""
    f = page_table[pb + np.int64(ahead[(head + AHEAD_REFS // 2) & AHEAD_MASK, AHEAD_PAGE])]
    if f >= 0:
        prefetch(frame_bytes, 2 * (fb + f))
        if repl == R_LRU:
            prefetch(links, 2 * (fb + f))
    if repl == R_LRU:
        f = page_table[pb + np.int64(ahead[(head + AHEAD_REFS // 4) & AHEAD_MASK, AHEAD_PAGE])]
        if f >= 0:
            before = links[2 * (fb + f)]
            after = links[2 * (fb + f) + 1]
            if before >= 0:
                prefetch(links, 2 * (fb + before))
            if after >= 0:
                prefetch(links, 2 * (fb + after))


@jit
def simple_refs(st, v, p, clock, stop_t, n, left, stall_sum, gidx, wrap, head, drawn, use_ahead):
    """VM v's references from the current one on, while each needs no host work: a hit on a frame
    in host RAM (or shared, when read), or, while nothing of v is shared, compressed, host-swapped
    or Smart Paged (so every frame in use is in host RAM), a guest page fault served from a free
    frame in RAM or by evicting the guest's victim. Stops at t ``stop_t``, at ``left``
    references, or at the first reference that needs more, which it returns as pending for
    access(). Each step is the one access() and guest_page_fault() take, in the same order and
    with the same floating-point operations, so results do not depend on which path served a
    reference. A function of its own, called once per run of references: the loop then keeps
    its few values in registers. Returns (clock, n, stall_sum, gidx, head, drawn, pending,
    page, write)."""
    fb = st.vm_i[v, I_FRAME_BASE]
    pb = st.vm_i[v, I_PAGE_BASE]
    repl = st.vm_i[v, I_REPL]
    rng = st.rng
    page_table = st.page_table
    frame_page = st.frame_page
    frame_bytes = st.frame_bytes
    links = st.links
    vm_i = st.vm_i
    vm_c = st.vm_c
    traces = st.traces
    zipf_ranks = st.zipf_ranks
    ahead = st.ahead
    kind = st.ph_i[p, P_KIND]
    start = st.ph_i[p, P_START]
    npages = st.ph_i[p, P_NPAGES]
    toff = st.ph_i[p, P_TRACE_OFF]
    hot = st.ph_i[p, P_HOT_PAGES]
    compute = st.ph_f[p, P_COMPUTE_NS]
    wr = st.ph_f[p, P_WRITE]
    zs = st.ph_f[p, P_ZIPF_S]
    zhx1 = st.ph_f[p, P_ZIPF_HX1]
    zhn = st.ph_f[p, P_ZIPF_HN]
    zss = st.ph_f[p, P_ZIPF_SS]
    hot_prob = st.ph_f[p, P_HOT_PROB]
    pf_dev = vm_i[v, I_PF_DEV]
    guest_fault_ns = st.host_f[HF_GUEST_FAULT_NS]
    zero_fill_ns = st.host_f[HF_ZERO_FILL_NS]
    host_i = st.host_i
    miss_ok = (vm_i[v, I_SHARED] == 0 and vm_i[v, I_SWAPPED] == 0 and vm_i[v, I_COMPRESSED] == 0
               and vm_i[v, I_SMART] == 0)
    page = np.int64(0)
    write = False
    pending = False
    row = vm_i[v]
    crow = vm_c[v]
    vu = U(v)
    # the guest's LRU list ends, in registers while the loop runs (written back when it stops)
    lru_head = row[I_LRU_HEAD]
    lru_tail = row[I_LRU_TAIL]
    read_trace = kind == K_TRACE and wr <= 0.0
    trace_ahead = read_trace and npages >= AHEAD_MIN_PAGES and wrap >= AHEAD_REFS
    if read_trace:
        use_ahead = False
    while clock < stop_t and n < left:
        if use_ahead:
            while drawn < AHEAD_REFS:
                slot = (head + drawn) & AHEAD_MASK
                ahead[slot, AHEAD_RNG] = rng[v]
                page, drawn_write, gidx = draw_reference(rng, v, traces, zipf_ranks, kind, start, npages, toff, gidx,
                                                         wrap, zs, zhx1, zhn, zss, hot, hot_prob, wr)
                ahead[slot, AHEAD_PAGE] = np.uint64(page)
                ahead[slot, AHEAD_WRITE] = np.uint64(1 if drawn_write else 0)
                prefetch(page_table, pb + page)
                drawn += 1
            prefetch_ahead(page_table, frame_bytes, links, ahead, fb, pb, head, repl)
            page = np.int64(ahead[head, AHEAD_PAGE])
            write = ahead[head, AHEAD_WRITE] != 0
            head = (head + 1) & AHEAD_MASK
            drawn -= 1
        elif read_trace:
            # draw_reference for a read-only trace, without its dispatch on the kind; the page
            # table entry a window ahead is fetched now (the trace says which it is)
            if trace_ahead:
                j = gidx + AHEAD_REFS
                if j >= wrap:
                    j -= wrap
                prefetch(page_table, pb + start + np.int64(traces[U(toff + j)]))
            page = start + np.int64(traces[U(toff + gidx)])
            gidx += 1
            if gidx == wrap:
                gidx = 0
            write = False
        else:
            page, write, gidx = draw_reference(rng, v, traces, zipf_ranks, kind, start, npages, toff, gidx, wrap,
                                               zs, zhx1, zhn, zss, hot, hot_prob, wr)
        f = np.int64(page_table[U(pb + page)])
        if f >= 0:
            F = fb + f
            hs = frame_bytes[U(2 * F)]
            fl = np.int64(frame_bytes[U(2 * F + 1)])
            if hs != H_RAM and hs != H_SHARED:
                pending = True
                break
            if write and (fl & (F_WRITTEN | F_COPY)) != F_WRITTEN:
                if hs != H_RAM:      # a copy-on-write break
                    pending = True
                    break
                if (fl & F_COPY) != 0:
                    row[I_PF_SLOTS] -= 1   # the page file copy is stale now; its slot is freed
                fl = (fl | F_WRITTEN) & ~F_COPY
            frame_bytes[U(2 * F + 1)] = fl | TOUCH_BITS
            if repl == R_LRU and lru_head != f:
                prv = np.int64(links[U(2 * F)])
                nxt = np.int64(links[U(2 * F + 1)])
                links[U(2 * (fb + prv) + 1)] = nxt   # f is not the head, so it has a prev
                if nxt >= 0:
                    links[U(2 * (fb + nxt))] = prv
                else:
                    lru_tail = prv
                links[U(2 * F)] = -1
                links[U(2 * F + 1)] = lru_head
                links[U(2 * (fb + lru_head))] = f
                lru_head = f
            clock += compute     # compute + a stall of 0.0, the same sum
            n += 1
            continue
        # a guest page fault (guest_page_fault's steps, for the cases that need no host work)
        s = 0.0
        if row[I_NFREE] > 0:
            hs = frame_bytes[U(2 * (fb + row[I_FREE_HEAD]))]
            if hs != H_RAM:
                # a frame the host has not backed yet: a zero fill, if the host has a page free
                # above its reserve and v is within its limit (obtain_host_page's first case)
                if (hs != H_UNBACKED or host_i[H_FIFO_ON] != 0 or host_i[H_FREE_Q] - 4 < host_i[H_MIN_FREE_Q]
                        or host_i[H_FREE_Q] < 4 or row[I_BACKED_Q] + 4 > row[I_LIMIT_Q]):
                    pending = True
                    break
                host_i[H_FREE_Q] -= 4
                row[I_BACKED_Q] += 4
                s += zero_fill_ns
                crow[C_ZERO_FILL] += 1
                row[I_RESIDENT] += 1
                frame_bytes[U(2 * (fb + row[I_FREE_HEAD]))] = H_RAM
            f = free_pop(st, vu, fb)
            F = fb + f
            kept = np.int64(frame_bytes[U(2 * F + 1)]) & HOST_BITS
        else:
            # the victim must be in host RAM, and the page file have room in case it needs writing
            if not miss_ok or row[I_PF_SLOTS] >= row[I_PF_CAP] or row[I_NINUSE] == 0:
                pending = True
                break
            f = lru_tail if repl == R_LRU else guest_victim(st, vu, fb)
            F = fb + f
            fl = np.int64(frame_bytes[U(2 * F + 1)])
            if (fl & F_COPY) == 0:
                s += device_io(st, pf_dev, clock + s, True)
                row[I_PF_SLOTS] += 1
                crow[C_GUEST_PAGE_OUT] += 1
            if repl == R_LRU:     # lru_unlink of the tail
                lru_tail = np.int64(links[U(2 * F)])
                if lru_tail >= 0:
                    links[U(2 * (fb + lru_tail) + 1)] = -1
                else:
                    lru_head = -1
            page_table[U(pb + np.int64(frame_page[U(F)]))] = PAGED_WRITTEN if (fl & F_WRITTEN) != 0 else PAGED
            kept = fl & HOST_BITS
            row[I_NINUSE] -= 1
            row[I_PAGED] += 1
        G = pb + page
        old = page_table[U(G)]
        if old == UNTOUCHED:
            crow[C_GUEST_FAULT] += 1
            row[I_TOUCHED] += 1
            s += guest_fault_ns
            fl = kept
        else:
            s += device_io(st, pf_dev, clock + s, False)
            crow[C_GUEST_PF_READ] += 1
            row[I_PAGED] -= 1
            fl = kept | F_COPY | (F_WRITTEN if old == PAGED_WRITTEN else 0)
        page_table[U(G)] = f
        frame_page[U(F)] = page
        row[I_NINUSE] += 1
        if repl == R_LRU:     # lru_push_front
            links[U(2 * F)] = -1
            links[U(2 * F + 1)] = lru_head
            if lru_head >= 0:
                links[U(2 * (fb + lru_head))] = f
            else:
                lru_tail = f
            lru_head = f
        fl |= F_ACCESSED | F_SAMPLE      # in with the guest reference bit clear, as in access()
        if write and (fl & (F_WRITTEN | F_COPY)) != F_WRITTEN:
            if (fl & F_COPY) != 0:
                row[I_PF_SLOTS] -= 1
            fl = (fl | F_WRITTEN) & ~F_COPY
        frame_bytes[U(2 * F + 1)] = fl
        clock += compute + s
        stall_sum += s
        n += 1
    row[I_LRU_HEAD] = lru_head
    row[I_LRU_TAIL] = lru_tail
    return clock, n, stall_sum, gidx, head, drawn, pending, page, write


# --- phases and the run loop --------------------------------------------------------------------

@jit
def next_phase(st, v, clock):
    p = st.vm_i[v, I_PHASE]
    if st.ph_i[p, P_FREE_ON_END] != 0:
        free_pages(st, v, st.ph_i[p, P_START], st.ph_i[p, P_NPAGES])
    first = st.vm_i[v, I_PHASE_FIRST]
    end = st.vm_i[v, I_PHASE_END]
    if p == st.vm_i[v, I_BOOT_PHASE]:
        nxt = first
    else:
        nxt = p + 1
    if nxt >= end:
        if st.vm_i[v, I_REPEAT] != 0 and end > first:
            nxt = first
        else:
            st.vm_i[v, I_DONE] = 1
            return
    st.vm_i[v, I_PHASE] = nxt
    st.vm_i[v, I_PHASE_REFS] = 0
    st.vm_f[v, F_PHASE_START] = clock


@jit
def run_vm(st, v, t_end):
    """Run VM v's references until its clock reaches t_end (closed loop: every stall delays the
    next reference), its workload ends, or it cannot get memory."""
    fb = st.vm_i[v, I_FRAME_BASE]
    pb = st.vm_i[v, I_PAGE_BASE]
    repl = st.vm_i[v, I_REPL]
    clock = st.vm_f[v, F_CLOCK]
    while clock < t_end:
        if st.vm_i[v, I_BLOCKED] != 0:
            st.vm_f[v, F_BLOCKED] += t_end - clock
            clock = t_end
            break
        if st.vm_i[v, I_DONE] != 0:
            clock = t_end
            break
        p = st.vm_i[v, I_PHASE]
        kind = st.ph_i[p, P_KIND]
        phase_end_t = st.vm_f[v, F_PHASE_START] + st.ph_f[p, P_DURATION_NS]
        done_refs = st.vm_i[v, I_PHASE_REFS]
        limit = st.ph_i[p, P_REFS]
        if clock >= phase_end_t or (limit >= 0 and done_refs >= limit):
            next_phase(st, v, clock)
            continue
        if kind == K_IDLE:
            clock = t_end if t_end < phase_end_t else phase_end_t
            continue
        stop_t = t_end if t_end < phase_end_t else phase_end_t
        left = limit - done_refs if limit >= 0 else np.int64(1) << 62
        compute = st.ph_f[p, P_COMPUTE_NS]
        npages = st.ph_i[p, P_NPAGES]
        tlen = st.ph_i[p, P_TRACE_LEN]
        # position of the next reference to draw for the sequential kinds, derived from refs done
        # so that a restart of the loop after a block resumes exactly where it was
        if kind == K_TRACE:
            gidx = done_refs % tlen
            wrap = tlen
        elif kind == K_SCAN:
            gidx = done_refs % npages
            wrap = npages
        else:
            gidx = 0
            wrap = 1
        head = 0
        drawn = 0
        # a working set that fits in the processor's caches gains nothing from prefetching
        use_ahead = npages >= AHEAD_MIN_PAGES
        n = np.int64(0)
        stall_sum = 0.0
        interrupted = 0.0
        while clock < stop_t and n < left:
            clock, n, stall_sum, gidx, head, drawn, pending, page, write = simple_refs(
                st, v, p, clock, stop_t, n, left, stall_sum, gidx, wrap, head, drawn, use_ahead)
            if not pending:
                break
            # the reference simple_refs left: access() serves every case (host faults, reclaim,
            # copy-on-write, blocking)
            s = access(st, v, fb, pb, repl, page, write, clock)
            if s < 0.0:
                interrupted = s
                break
            clock += compute + s
            stall_sum += s
            n += 1
        if drawn > 0:
            st.rng[v] = st.ahead[head, AHEAD_RNG]   # the references drawn but not used are drawn again
        st.vm_i[v, I_PHASE_REFS] = done_refs + n
        st.vm_c[v, C_REFS] += n
        st.vm_f[v, F_STALL] += stall_sum
        st.vm_f[v, F_COMPUTE] += n * compute
        if interrupted == OOM:
            st.vm_i[v, I_DONE] = 1
            clock = t_end
            break
        if interrupted == BLOCKED:
            # no memory anywhere for now: wait for the next slice, when another VM may have
            # freed some or the policy may have acted
            st.vm_f[v, F_BLOCKED] += t_end - clock
            st.vm_f[v, F_MEMORY_WAIT] += t_end - clock
            clock = t_end
            break
    st.vm_f[v, F_CLOCK] = clock


@jit
def run_epoch(st, t0, t1, slice_ns):
    """Interleave the running VMs in slices so that one VM's faults can take memory from another
    within an epoch. VMs run in index order within a slice, so runs repeat exactly."""
    n = st.vm_i.shape[0]
    t = t0
    while t < t1:
        t_end = t + slice_ns
        if t_end > t1:
            t_end = t1
        for v in range(n):
            if st.vm_i[v, I_RUNNING] != 0 and st.vm_f[v, F_CLOCK] < t_end:
                run_vm(st, v, t_end)
        t = t_end
