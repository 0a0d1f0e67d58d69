"""Turn a Scenario into the flat arrays of ``state.State``: frames, pages, phases, devices."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .config import PAGES_PER_MB, Phase, Scenario
from .kernel import zipf_constants, zipf_table
from .state import (
    ABSENT, AHEAD_REFS, D_PAR, D_READ_NS, D_WRITE_NS, F_OS_COMPRESSIBLE, F_OS_SHARED, F_OS_ZERO,
    H_FREE_Q, H_RNG, H_SWAP_DEV, H_TOTAL_Q, HF_COMPRESS_NS, HF_COW_NS, HF_DECOMPRESS_NS,
    HF_GUEST_FAULT_NS, HF_ZERO_FILL_NS, I_BALLOON_HEAD, I_BOOT_PHASE, I_COMP_CAP_Q, I_FRAME_BASE,
    I_FREE_HEAD, I_IMAGE_ID, I_IMAGE_PAGES, I_LIMIT_Q, I_LRU_HEAD, I_LRU_TAIL, I_NFRAMES,
    I_NPAGES, I_OS_PAGES, I_PAGE_BASE, I_PF_CAP, I_PF_DEV, I_PHASE_END, I_PHASE_FIRST,
    I_REPEAT, I_REPL, I_SMART_DEV, I_SWAP_OK, I_TARGET_Q, KIND_CODES, N_C, N_D, N_F, N_H, N_HF, N_I, N_PF,
    N_PI, NO_LIMIT, P_COMPRESSIBLE, P_COMPUTE_NS, P_DURATION_NS, P_FREE_ON_END, P_HOT_PAGES,
    P_HOT_PROB, P_KIND, P_NPAGES, P_REFS, P_SHARED, P_START, P_TRACE_LEN, P_TRACE_OFF,
    P_WRITE, P_ZERO, P_ZIPF_HN, P_ZIPF_HX1, P_ZIPF_S, P_ZIPF_SS, Q_PER_PAGE,
    R_LRU, REPLACEMENT_CODES, State, UNTOUCHED, K_SCAN, ZIPF_BUCKET_BITS, )

BOOT_COMPUTE_NS = 500.0     # CPU time per OS page touched while booting


def mb_to_pages(mb: float) -> int:
    return int(round(mb * PAGES_PER_MB))


def phase_pages(phase: Phase, trace_pages: int = 0) -> int:
    """Guest pages a phase spans: a trace's distinct page ids (``trace_pages``), else its footprint."""
    if phase.kind == "trace":
        return trace_pages
    if phase.kind == "idle":
        return mb_to_pages(phase.footprint_mb)
    return max(1, mb_to_pages(phase.footprint_mb))


def _traces(chunks: list[np.ndarray]) -> np.ndarray:
    """The phases' traces end to end as int32. One trace that is already int32 is used as it is,
    not copied: the kernel only reads it, and a copy of a long trace (20 MB for 5 M references)
    costs more than replaying it at the engine's speed does."""
    if not chunks:
        return np.zeros(1, dtype=np.int32)
    one = chunks[0]
    # a read-only array would be a new type for the compiled kernel: copy it
    if len(chunks) == 1 and one.dtype == np.int32 and one.flags.c_contiguous and one.flags.writeable:
        return one
    return np.concatenate(chunks).astype(np.int32, copy=False)


def build(scenario: Scenario, load_trace: Callable[[str], np.ndarray]) -> State:
    host = scenario.host
    devices = host.device_names()
    dev_index = {name: i for i, name in enumerate(devices)}
    images = sorted({vm.os_image for vm in scenario.vms})
    image_index = {name: i + 1 for i, name in enumerate(images)}

    n_vms = len(scenario.vms)
    vm_i = np.zeros((n_vms, N_I), dtype=np.int64)
    vm_f = np.zeros((n_vms, N_F), dtype=np.float64)
    vm_c = np.zeros((n_vms, N_C), dtype=np.int64)
    ph_i_rows: list[np.ndarray] = []
    ph_f_rows: list[np.ndarray] = []
    trace_chunks: list[np.ndarray] = []
    trace_off = 0
    trace_cache: dict[str, np.ndarray] = {}
    frame_base = 0
    page_base = 0
    zipf_tables: dict[tuple[int, float], int] = {}
    zipf_chunks: list[np.ndarray] = []

    def zipf_ranks_at(npages: int, s: float, hx1: float, hn: float, ss: float) -> int:
        key = (npages, s)
        if key not in zipf_tables:
            table = np.zeros(1 << ZIPF_BUCKET_BITS, dtype=np.uint16)
            zipf_table(npages, s, hx1, hn, ss, table)
            zipf_tables[key] = len(zipf_chunks) << ZIPF_BUCKET_BITS
            zipf_chunks.append(table)
        return zipf_tables[key]

    def add_phase(kind: int, start: int, npages: int, refs: int, duration_ns: float, write: float,
                  compute_ns: float, free_on_end: bool, mix, trace_span=(0, 0), phase: Phase | None = None):
        pi = np.zeros(N_PI, dtype=np.int64)
        pf = np.zeros(N_PF, dtype=np.float64)
        pi[P_KIND] = kind
        pi[P_START] = start
        pi[P_NPAGES] = npages
        pi[P_REFS] = refs
        pi[P_TRACE_OFF], pi[P_TRACE_LEN] = trace_span
        pi[P_FREE_ON_END] = int(free_on_end)
        pf[P_DURATION_NS] = duration_ns
        pf[P_WRITE] = write
        pf[P_COMPUTE_NS] = compute_ns
        pf[P_ZERO] = mix.zero
        pf[P_SHARED] = mix.shared
        pf[P_COMPRESSIBLE] = mix.compressible
        if phase is not None:
            pf[P_ZIPF_S] = phase.zipf_s
            if phase.kind == "zipf":
                pf[P_ZIPF_HX1], pf[P_ZIPF_HN], pf[P_ZIPF_SS] = zipf_constants(npages, phase.zipf_s)
                pi[P_TRACE_OFF] = zipf_ranks_at(npages, phase.zipf_s, pf[P_ZIPF_HX1], pf[P_ZIPF_HN], pf[P_ZIPF_SS])
            hot = max(1, min(npages - 1, int(round(phase.hot_fraction * npages)))) if npages > 1 else 1
            pi[P_HOT_PAGES] = hot
            pf[P_HOT_PROB] = phase.hot_probability if npages > 1 else 1.0
        ph_i_rows.append(pi)
        ph_f_rows.append(pf)
        return len(ph_i_rows) - 1

    for v, vm in enumerate(scenario.vms):
        frames = mb_to_pages(vm.frames_mb)
        os_pages = mb_to_pages(vm.os_mb)
        boot = add_phase(K_SCAN, 0, os_pages, os_pages, math.inf, 0.0, BOOT_COMPUTE_NS, False, vm.os_content)
        first = boot + 1
        npages = os_pages
        for ph in vm.phases:
            ids = None
            span = (0, 0)
            if ph.kind == "trace":
                if ph.trace not in trace_cache:
                    trace_cache[ph.trace] = load_trace(ph.trace)
                ids = trace_cache[ph.trace]
                span = (trace_off, len(ids))
                trace_chunks.append(ids)
                trace_off += len(ids)
            start = os_pages + mb_to_pages(ph.offset_mb)
            pages = phase_pages(ph, int(ids.max()) + 1 if ph.kind == "trace" else 0)
            refs = -1 if ph.refs is None else int(ph.refs)
            if ph.kind == "trace":
                loop_refs = len(ids) * max(1, ph.trace_loops)
                refs = loop_refs if refs < 0 else min(refs, loop_refs)
            duration_ns = math.inf if ph.duration_s is None else ph.duration_s * 1e9
            add_phase(KIND_CODES[ph.kind], start, pages, refs, duration_ns, ph.write_ratio,
                      ph.compute_ns, ph.free_on_end, ph.content, span, ph)
            npages = max(npages, start + pages)
        end = len(ph_i_rows)
        npages = max(npages, 1)

        row = vm_i[v]
        row[I_FRAME_BASE] = frame_base
        row[I_NFRAMES] = frames
        row[I_PAGE_BASE] = page_base
        row[I_NPAGES] = npages
        row[I_FREE_HEAD] = row[I_BALLOON_HEAD] = row[I_LRU_HEAD] = row[I_LRU_TAIL] = -1
        row[I_REPL] = REPLACEMENT_CODES[vm.replacement]
        row[I_LIMIT_Q] = NO_LIMIT
        row[I_TARGET_Q] = NO_LIMIT
        # ESX Mem.MemZipMaxPct: the compression cache holds at most 10% of the VM's memory
        row[I_COMP_CAP_Q] = frames * Q_PER_PAGE // 10
        row[I_SWAP_OK] = 0
        # a page file large enough for the whole footprint unless the scenario sets one
        row[I_PF_CAP] = mb_to_pages(vm.pagefile_mb) if vm.pagefile_mb is not None else npages
        row[I_PF_DEV] = dev_index[vm.pagefile_device]
        row[I_SMART_DEV] = dev_index[vm.smart_paging_device or host.swap_device]
        row[I_IMAGE_ID] = image_index[vm.os_image]
        row[I_IMAGE_PAGES] = max(1, mb_to_pages(vm.os_image_mb))
        row[I_OS_PAGES] = os_pages
        row[I_BOOT_PHASE] = boot
        row[I_PHASE_FIRST] = first
        row[I_PHASE_END] = end
        row[I_REPEAT] = int(vm.repeat)
        vm_f[v, F_OS_ZERO] = vm.os_content.zero
        vm_f[v, F_OS_SHARED] = vm.os_content.shared
        vm_f[v, F_OS_COMPRESSIBLE] = vm.os_content.compressible
        frame_base += frames
        page_base += npages

    host_i = np.zeros(N_H, dtype=np.int64)
    usable_q = mb_to_pages(host.memory_mb - host.reserve_mb) * Q_PER_PAGE
    host_i[H_TOTAL_Q] = usable_q
    host_i[H_FREE_Q] = usable_q
    host_i[H_SWAP_DEV] = dev_index[host.swap_device]
    host_i[H_RNG] = n_vms
    host_f = np.zeros(N_HF, dtype=np.float64)
    costs = host.costs
    host_f[HF_GUEST_FAULT_NS] = costs.guest_fault_us * 1e3
    host_f[HF_ZERO_FILL_NS] = costs.zero_fill_us * 1e3
    host_f[HF_COW_NS] = costs.cow_break_us * 1e3
    host_f[HF_COMPRESS_NS] = costs.compress_us * 1e3
    host_f[HF_DECOMPRESS_NS] = costs.decompress_us * 1e3
    dev_f = np.zeros((len(devices), N_D), dtype=np.float64)
    for i, name in enumerate(devices):
        d = host.device(name)
        dev_f[i, D_READ_NS] = d.read_us * 1e3
        dev_f[i, D_WRITE_NS] = d.write_us * 1e3
        dev_f[i, D_PAR] = max(1, d.parallelism)

    # one xorshift stream per VM and one for the host, all from the scenario seed
    seeds = np.random.SeedSequence(scenario.seed).generate_state(n_vms + 1, dtype=np.uint64)
    rng = np.where(seeds == 0, np.uint64(0x9E3779B97F4A7C15), seeds).astype(np.uint64)

    # only LRU guests link their frames (the free and balloon lists chain through frame_page). At
    # least two rows: a column of one row would count as contiguous, a second type to compile for.
    lru_rows = frame_base if bool((vm_i[:, I_REPL] == R_LRU).any()) else 0
    links = np.full((max(lru_rows, 2), 2), -1, dtype=np.int32)
    # a frame's host state and flags side by side: a hit reads both, from one cache line
    frame_bytes = np.zeros((frame_base, 2), dtype=np.uint8)
    state = State(
        page_table=np.full(page_base, UNTOUCHED, dtype=np.int32),
        frame_page=np.full(frame_base, ABSENT, dtype=np.int32),
        lru_prev=links[:, 0],
        lru_next=links[:, 1],
        host_state=frame_bytes[:, 0],
        flags=frame_bytes[:, 1],
        fifo=np.zeros(1, dtype=np.int32),
        share_ref=np.zeros(1, dtype=np.int32),
        frame_bytes=frame_bytes.reshape(-1),
        links=links.reshape(-1),
        vm_i=vm_i, vm_f=vm_f, vm_c=vm_c, host_i=host_i, host_f=host_f, dev_f=dev_f, rng=rng,
        ph_i=np.array(ph_i_rows, dtype=np.int64).reshape(-1, N_PI),
        ph_f=np.array(ph_f_rows, dtype=np.float64).reshape(-1, N_PF),
        traces=_traces(trace_chunks),
        zipf_ranks=(np.concatenate(zipf_chunks) if zipf_chunks else np.zeros(1, dtype=np.uint16)),
        ahead=np.zeros((AHEAD_REFS, 3), dtype=np.uint64),
    )
    return state
