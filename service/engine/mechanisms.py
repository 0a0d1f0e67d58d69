"""Mechanisms a policy drives at epoch boundaries: balloon, hot-add, the sharing scanner, host
reclamation to a limit, Smart Paging release, and a VM's power cycle. Compiled like the kernel,
since each touches up to every frame of a VM."""
from __future__ import annotations

from .kernel import (
    jit,
    backing_quarters, content_slot, evict_to_host_storage, fifo_push, guest_evict, host_fault_in, may_take,
    pick_host_victim, rand_below, release_backing, share_frame, unshare, balloon_pop, balloon_push,
    free_pop, free_push, is_ballooned, list_next,
    clear_flags, flags_of, host_state_of, set_flags, set_lru_next, set_lru_prev,
)
from .state import (
    ABSENT, F_IN_FIFO, F_SAMPLE, H_FREE_Q, H_RAM, H_SHARED, H_SMART, H_UNBACKED,
    H_RNG, I_BACKED_Q, I_BALLOON_HEAD, I_BOOT_PHASE, I_DONE, I_FIFO_HEAD, I_FIFO_LEN,
    I_FRAME_BASE, I_FREE_HEAD, I_GHAND, I_HHAND, I_LIMIT_Q, I_LRU_HEAD, I_LRU_TAIL, I_MIN_Q, I_NBALLOON,
    I_NFRAMES, I_NFREE, I_NINUSE, I_NPAGES, I_OOM, I_PAGE_BASE, I_PAGED, I_PF_SLOTS, I_PHASE,
    I_PHASE_REFS, I_PRESENT, I_REPL, I_SCAN_PTR, I_SMART, I_SMART_QUOTA, R_LRU,
    I_TOUCHED, F_PHASE_START, F_CLOCK, UNTOUCHED,
)


@jit
def set_balloon(st, v, target, t):
    """Inflate or deflate VM v's balloon to ``target`` frames. Inflating takes the guest's free
    frames first, then its coldest pages, which the guest pages out itself; it stops where the
    next frame would take the VM's holding below its guarantee. Returns the guest's paging time
    and the balloon size reached (less than asked if the guest could not page)."""
    fb = st.vm_i[v, I_FRAME_BASE]
    pb = st.vm_i[v, I_PAGE_BASE]
    stall = 0.0
    while st.vm_i[v, I_NBALLOON] < target:
        if st.vm_i[v, I_NFREE] > 0:
            f = free_pop(st, v, fb)
        else:
            # the guest's victim may cost a whole page of the VM's holding before the check
            # below can see it: a shared page it maps is dropped as it is paged out
            if not may_take(st, v, 4):
                break
            f, s = guest_evict(st, v, fb, pb, t + stall)
            if f < 0:
                break
            stall += s
        if not may_take(st, v, backing_quarters(st, fb + f)):
            free_push(st, v, fb, f)
            break
        release_backing(st, v, fb, f)
        balloon_push(st, v, fb, f)
    while st.vm_i[v, I_NBALLOON] > target:
        f = balloon_pop(st, v, fb)
        free_push(st, v, fb, f)
    return stall, st.vm_i[v, I_NBALLOON]


@jit
def hot_add(st, v, new_present):
    """Add guest-physical frames up to ``new_present``; they join the guest's free list unbacked."""
    fb = st.vm_i[v, I_FRAME_BASE]
    old = st.vm_i[v, I_PRESENT]
    # push in reverse so that the lowest new frame is handed out first
    for f in range(new_present - 1, old - 1, -1):
        free_push(st, v, fb, f)
    st.vm_i[v, I_PRESENT] = new_present


@jit
def share_scan(st, v, pages, sequential):
    """Content-based page sharing: look at ``pages`` frames of VM v, in random order (ESX) or
    sequentially (KSM), and map each whose content is shareable onto the one host frame holding
    that content. The first holder of a content becomes its frame (a 'hint' in ESX terms, at no
    saving); each later one frees its own host page. Returns the frames it newly shared."""
    fb = st.vm_i[v, I_FRAME_BASE]
    present = st.vm_i[v, I_PRESENT]
    if present == 0:
        return 0
    merged = 0
    ptr = st.vm_i[v, I_SCAN_PTR]
    for _ in range(pages):
        if sequential:
            f = ptr
            ptr += 1
            if ptr >= present:
                ptr = 0
        else:
            f = rand_below(st.rng, st.host_i[H_RNG], present)
        F = fb + f
        page = st.frame_page[F]
        if page < 0 or host_state_of(st, F) != H_RAM:
            continue
        slot = content_slot(st, v, page, flags_of(st, F))
        if slot < 0:
            continue
        share_frame(st, v, F, slot)
        merged += 1
    st.vm_i[v, I_SCAN_PTR] = ptr
    return merged


@jit
def reclaim_to_limit(st, v, t, to_smart):
    """Page VM v's host memory out (or compress it) until it is within its host limit, but not
    below its guarantee. Runs in the background at the epoch boundary: the devices are busy, the
    VM's clock is not charged."""
    done = 0
    while st.vm_i[v, I_BACKED_Q] > st.vm_i[v, I_LIMIT_Q] and may_take(st, v, 4):
        f = pick_host_victim(st, v)
        if f < 0:
            break
        evict_to_host_storage(st, v, f, t, to_smart)
        done += 1
    return done


@jit
def reclaim_pages(st, v, pages, t):
    """Page out (or compress) ``pages`` of VM v's host memory now, in the background, but not
    below its guarantee."""
    done = 0
    while done < pages and may_take(st, v, 4):
        f = pick_host_victim(st, v)
        if f < 0:
            break
        evict_to_host_storage(st, v, f, t, False)
        done += 1
    return done


@jit
def report_free_pages(st, v):
    """Free page reporting (virtio-balloon): the guest tells the host which frames it is not
    using, and the host drops their backing; they stay the guest's, and a later touch is a fresh
    zero-filled page."""
    fb = st.vm_i[v, I_FRAME_BASE]
    f = st.vm_i[v, I_FREE_HEAD]
    released = 0
    while f >= 0:
        if host_state_of(st, fb + f) != H_UNBACKED:
            if not may_take(st, v, backing_quarters(st, fb + f)):
                break
            release_backing(st, v, fb, f)
            released += 1
        f = list_next(st.frame_page[fb + f])
    return released


@jit
def evict_frames(st, v, frames, t):
    """Host-swap the given frames of VM v (a plugin's batch choice), but not below its guarantee.
    Frames not backed by private RAM are skipped."""
    fb = st.vm_i[v, I_FRAME_BASE]
    done = 0
    for i in range(frames.shape[0]):
        f = frames[i]
        if 0 <= f < st.vm_i[v, I_PRESENT] and host_state_of(st, fb + f) == H_RAM:
            if not may_take(st, v, 4):
                break
            evict_to_host_storage(st, v, f, t, False)
            done += 1
    return done


@jit
def populate(st, v, t):
    """Back every frame the guest can use with host memory now, as Hyper-V does for a VM's
    assigned memory (it does not allocate on first touch). Frames it cannot back stay unbacked;
    with a Smart Paging allowance the VM's own frames spill to its Smart Paging file. Returns
    how many frames are still unbacked."""
    fb = st.vm_i[v, I_FRAME_BASE]
    missing = 0
    for f in range(st.vm_i[v, I_PRESENT]):
        if host_state_of(st, fb + f) == H_UNBACKED and not is_ballooned(st.frame_page[fb + f]):
            if host_fault_in(st, v, fb, f, t) < 0.0:
                missing += 1
    return missing


@jit
def release_smart_paging(st, v, t):
    """Bring Smart-Paged frames back into RAM while host memory is free, down to the quota."""
    fb = st.vm_i[v, I_FRAME_BASE]
    present = st.vm_i[v, I_PRESENT]
    f = 0
    while st.vm_i[v, I_SMART] > st.vm_i[v, I_SMART_QUOTA] and f < present:
        if host_state_of(st, fb + f) == H_SMART:
            if st.host_i[H_FREE_Q] < 4:
                break
            if host_fault_in(st, v, fb, f, t) < 0.0:
                break
        f += 1


@jit
def power_off(st, v):
    """Release everything VM v holds on the host and in its guest: stop, or the first half of a
    restart."""
    fb = st.vm_i[v, I_FRAME_BASE]
    pb = st.vm_i[v, I_PAGE_BASE]
    n = st.vm_i[v, I_NFRAMES]
    for f in range(n):
        F = fb + f
        page = st.frame_page[F]
        if page >= 0 and host_state_of(st, F) == H_SHARED:
            unshare(st, v, fb, f, page, flags_of(st, F))
        release_backing(st, v, fb, f)
        st.frame_page[F] = ABSENT
        set_flags(st, F, 0)
        if st.vm_i[v, I_REPL] == R_LRU:     # the links exist only when some guest uses LRU
            set_lru_prev(st, F, -1)
            set_lru_next(st, F, -1)
    for p in range(st.vm_i[v, I_NPAGES]):
        st.page_table[pb + p] = UNTOUCHED
    for col in (I_PRESENT, I_NFREE, I_NBALLOON, I_NINUSE, I_PAGED, I_PF_SLOTS, I_TOUCHED,
                I_GHAND, I_HHAND, I_FIFO_HEAD, I_FIFO_LEN, I_SCAN_PTR, I_SMART_QUOTA, I_OOM, I_MIN_Q):
        st.vm_i[v, col] = 0
    for col in (I_FREE_HEAD, I_BALLOON_HEAD, I_LRU_HEAD, I_LRU_TAIL):
        st.vm_i[v, col] = -1


@jit
def power_on(st, v, present, clock):
    """Boot VM v with ``present`` frames: its workload starts over with the boot phase."""
    hot_add(st, v, present)
    st.vm_i[v, I_PHASE] = st.vm_i[v, I_BOOT_PHASE]
    st.vm_i[v, I_PHASE_REFS] = 0
    st.vm_i[v, I_DONE] = 0
    st.vm_f[v, F_PHASE_START] = clock
    st.vm_f[v, F_CLOCK] = clock


@jit
def sample_begin(st, v, frames):
    """ESX's active-memory sampling: forget whether these frames were touched."""
    fb = st.vm_i[v, I_FRAME_BASE]
    for i in range(frames.shape[0]):
        clear_flags(st, fb + frames[i], F_SAMPLE)


@jit
def sample_count(st, v, frames):
    """(touched, counted): how many sampled frames were touched since ``sample_begin``, out of
    those the balloon does not hold now (a ballooned frame is not the VM's to touch, so counting
    it would make a ballooned VM look idle and tax it for the balloon)."""
    fb = st.vm_i[v, I_FRAME_BASE]
    touched = 0
    counted = 0
    for i in range(frames.shape[0]):
        F = fb + frames[i]
        if is_ballooned(st.frame_page[F]):
            continue
        counted += 1
        if st.frame_page[F] >= 0 and (flags_of(st, F) & F_SAMPLE) != 0:
            touched += 1
    return touched, counted


@jit
def build_fifo(st, v):
    """Start the host FIFO of VM v from the frames it backs now, in frame order."""
    fb = st.vm_i[v, I_FRAME_BASE]
    st.vm_i[v, I_FIFO_HEAD] = 0
    st.vm_i[v, I_FIFO_LEN] = 0
    for f in range(st.vm_i[v, I_PRESENT]):
        clear_flags(st, fb + f, F_IN_FIFO)
        if host_state_of(st, fb + f) == H_RAM:
            fifo_push(st, v, fb, f)
