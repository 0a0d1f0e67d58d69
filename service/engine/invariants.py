"""Consistency checks over the whole state, for tests and debugging (numpy, not per reference)."""
from __future__ import annotations

import numpy as np

from .state import (
    BALLOON_KIND, FREE_KIND, LIST_MARK, H_COMPRESSED, H_FREE_Q, H_RAM, H_SHARE_ON, H_SHARED, H_SHARED_FRAMES,
    H_SMART, H_SMART_USED, H_SWAP_USED, H_SWAPPED, H_TOTAL_Q, I_BACKED_Q, I_BALLOON_HEAD,
    I_COMP_Q, I_COMPRESSED, I_FRAME_BASE, I_FREE_HEAD, I_LRU_HEAD, I_NBALLOON, I_NFRAMES,
    I_NFREE, I_NINUSE, I_NPAGES, I_PAGE_BASE, I_PAGED, I_PRESENT, I_REPL, I_RESIDENT,
    I_RUNNING, I_SHARED, I_SMART, I_SWAPPED, I_TOUCHED, I_PF_SLOTS, I_PF_CAP, F_CBIG, F_COPY, PAGED, PAGED_WRITTEN, R_LRU,
    State,
)


def _walk(next_arr: np.ndarray, base: int, head: int, limit: int) -> list[int]:
    out = []
    f = head
    while f >= 0:
        out.append(f)
        if len(out) > limit:
            raise AssertionError("a guest list has a cycle")
        f = int(next_arr[base + f])
    return out


def _walk_stack(frame_page: np.ndarray, base: int, head: int, limit: int, kind: int) -> list[int]:
    """A free or balloon list (chained through frame_page: state.LIST_MARK); each frame's kind checked."""
    out = []
    f = head
    while f >= 0:
        out.append(f)
        if len(out) > limit:
            raise AssertionError("a guest list has a cycle")
        mark = int(frame_page[base + f])
        assert mark <= LIST_MARK and (LIST_MARK - mark) % 2 == kind, f"frame {f} on the wrong list ({mark})"
        f = (LIST_MARK - mark) // 2 - 1
    return out


def check(st: State, overhead_q_per_running_vm: int = 0) -> None:
    """Raise AssertionError naming the first broken invariant."""
    n = st.vm_i.shape[0]
    used_q = 0
    for v in range(n):
        row = st.vm_i[v]
        fb, nf = int(row[I_FRAME_BASE]), int(row[I_NFRAMES])
        pb, npg = int(row[I_PAGE_BASE]), int(row[I_NPAGES])
        present = int(row[I_PRESENT])
        fp = st.frame_page[fb:fb + nf]
        pt = st.page_table[pb:pb + npg]
        hs = st.host_state[fb:fb + nf]
        tag = f"vm {v}"
        assert present <= nf, f"{tag}: present {present} > frames {nf}"
        assert (fp[present:] < 0).all() and (hs[present:] == 0).all(), f"{tag}: frames beyond present are in use or backed"
        mapped = np.flatnonzero(pt >= 0)
        # every mapped page points at a frame that points back: nothing lost, nothing doubled
        assert len(np.unique(pt[mapped])) == len(mapped), f"{tag}: two pages share a guest frame"
        assert (fp[pt[mapped]] == mapped).all(), f"{tag}: page table and frame table disagree"
        inuse = np.flatnonzero(fp >= 0)
        assert len(inuse) == len(mapped) == row[I_NINUSE], f"{tag}: in-use count {row[I_NINUSE]} vs {len(inuse)} frames, {len(mapped)} pages"
        paged = int(np.count_nonzero((pt == PAGED) | (pt == PAGED_WRITTEN)))
        assert paged == row[I_PAGED], f"{tag}: paged count {row[I_PAGED]} vs {paged}"
        with_copy = int(np.count_nonzero(st.flags[fb + inuse] & F_COPY)) if len(inuse) else 0
        assert row[I_PF_SLOTS] == paged + with_copy, f"{tag}: page-file slots {row[I_PF_SLOTS]} != paged {paged} + clean copies {with_copy}"
        assert row[I_PF_SLOTS] <= row[I_PF_CAP], f"{tag}: page file over its size"
        assert row[I_TOUCHED] == len(mapped) + paged, f"{tag}: committed {row[I_TOUCHED]} != resident {len(mapped)} + paged {paged}"
        free = _walk_stack(st.frame_page, fb, int(row[I_FREE_HEAD]), nf, FREE_KIND)
        balloon = _walk_stack(st.frame_page, fb, int(row[I_BALLOON_HEAD]), nf, BALLOON_KIND)
        assert len(free) == row[I_NFREE], f"{tag}: free list broken"
        assert len(balloon) == row[I_NBALLOON], f"{tag}: balloon list broken"
        assert len(inuse) + len(free) + len(balloon) == present, f"{tag}: frames do not add up to present"
        assert (hs[balloon] == 0).all(), f"{tag}: a ballooned frame is still host-backed"
        if row[I_REPL] == R_LRU and len(inuse):
            lru = _walk(st.lru_next, fb, int(row[I_LRU_HEAD]), nf)
            assert np.array_equal(np.sort(lru), inuse), f"{tag}: LRU list does not hold exactly the in-use frames"
        counts = {H_RAM: I_RESIDENT, H_SHARED: I_SHARED, H_COMPRESSED: I_COMPRESSED,
                  H_SWAPPED: I_SWAPPED, H_SMART: I_SMART}
        for state_code, col in counts.items():
            assert np.count_nonzero(hs == state_code) == row[col], f"{tag}: host state {state_code} count {row[col]} wrong"
        comp = np.flatnonzero(hs == H_COMPRESSED)
        comp_q = int(np.sum(np.where(st.flags[fb + comp] & F_CBIG, 2, 1))) if len(comp) else 0
        assert comp_q == row[I_COMP_Q], f"{tag}: compression cache {row[I_COMP_Q]} q vs {comp_q}"
        assert row[I_BACKED_Q] == 4 * row[I_RESIDENT] + comp_q, f"{tag}: backed quarters {row[I_BACKED_Q]} wrong"
        if not row[I_RUNNING]:
            assert row[I_BACKED_Q] == 0 and present == 0, f"{tag}: a VM that is off holds memory"
        used_q += int(row[I_BACKED_Q]) + (overhead_q_per_running_vm if row[I_RUNNING] else 0)
    used_q += 4 * int(st.host_i[H_SHARED_FRAMES])
    assert st.host_i[H_FREE_Q] >= 0, "host free memory is negative"
    assert used_q + st.host_i[H_FREE_Q] == st.host_i[H_TOTAL_Q], (
        f"host memory does not add up: used {used_q} q + free {st.host_i[H_FREE_Q]} q != {st.host_i[H_TOTAL_Q]} q")
    assert st.host_i[H_SWAP_USED] == int(st.vm_i[:, I_SWAPPED].sum()), "host swap usage wrong"
    assert st.host_i[H_SMART_USED] == int(st.vm_i[:, I_SMART].sum()), "Smart Paging usage wrong"
    if st.host_i[H_SHARE_ON]:
        assert int(st.share_ref.sum()) == int(st.vm_i[:, I_SHARED].sum()), "share refcounts != shared frames"
        assert int(np.count_nonzero(st.share_ref)) == st.host_i[H_SHARED_FRAMES], "shared host frames wrong"
        assert (st.share_ref >= 0).all(), "negative share refcount"
