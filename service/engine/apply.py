"""Applying a policy's decisions to the engine state: every field checked, the mechanisms run.
A mixin of ``Simulation``; it reads and writes the simulation's state and nothing else."""
from __future__ import annotations

import math

import numpy as np

from ..sdk import Decisions, HostDecision, VMDecision
from ..sdk.decisions import SCAN_ORDERS
from ..sdk.views import HostView
from . import mechanisms
from .config import PAGES_PER_MB
from .hooks import PolicyError
from .layout import mb_to_pages
from .state import (
    F_CLOCK, F_STALL, H_FIFO_ON, H_MIN_FREE_Q, H_RAM, H_SHARE_ON, I_BACKED_Q, I_BLOCKED, I_COMP_CAP_Q,
    I_COMPRESS, I_FRAME_BASE, I_IMAGE_PAGES, I_LIMIT_Q, I_MIN_Q, I_PRESENT, I_SHARE_FIRST, I_SLOT_BASE, I_SMART,
    I_SMART_QUOTA, I_SWAP_OK, I_TARGET_Q, I_VICTIM, Q_PER_PAGE, V_FIFO, V_PLUGIN, VICTIM_CODES,
)

Q_PER_MB = PAGES_PER_MB * Q_PER_PAGE


def _mb(pages: float) -> float:
    return pages / PAGES_PER_MB


def _megabytes(value, lo: float, hi: float, error) -> float:
    """A decision's size in MB, checked: ``error(message)`` makes the PolicyError to raise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise error(f"must be a number, got {value!r}") from None
    if not (math.isfinite(x) and lo <= x <= hi):
        raise error(f"must be within {lo:g}..{hi:g} MB, got {value!r}")
    return x


class DecisionApplier:
    def _apply_host_decision(self, d: HostDecision) -> None:
        name = self.policy.name
        if not isinstance(d, HostDecision):
            raise PolicyError(name, f"expected a HostDecision, got {type(d).__name__}")
        if d.sharing_salted is not None:
            if self.sharing_salted is not None and d.sharing_salted != self.sharing_salted:
                raise PolicyError(name, "sharing_salted can only be set once, in setup()")
            self.sharing_salted = bool(d.sharing_salted)
        if d.sharing_pages_per_s is not None:
            rate = float(d.sharing_pages_per_s)
            if not (rate >= 0 and math.isfinite(rate)):
                raise PolicyError(name, f"sharing_pages_per_s must be a finite number >= 0, got {d.sharing_pages_per_s!r}")
            self.sharing_rate = rate
            if rate > 0 and self.st.host_i[H_SHARE_ON] == 0:
                self._enable_sharing()
        if d.sharing_scan is not None:
            if d.sharing_scan not in SCAN_ORDERS:
                raise PolicyError(name, f"sharing_scan must be one of {', '.join(SCAN_ORDERS)}, got {d.sharing_scan!r}")
            self.sharing_sequential = d.sharing_scan == "sequential"
        if d.state is not None:
            self.host_label = str(d.state)
        if d.min_free_mb is not None:
            reserve = _megabytes(d.min_free_mb, 0, self.scenario.host.memory_mb,
                                 lambda msg: PolicyError(name, f"min_free_mb {msg}"))
            self.st.host_i[H_MIN_FREE_Q] = int(reserve * Q_PER_MB)

    def _enable_sharing(self) -> None:
        """Allocate the content refcounts: one space per OS image, or per VM when salted."""
        st = self.st
        salted = bool(self.sharing_salted)
        self.sharing_salted = salted
        base = 0
        image_base: dict[str, int] = {}
        image_size: dict[str, int] = {}
        for v, vm in enumerate(self.scenario.vms):
            pages = max(1, mb_to_pages(vm.os_image_mb))
            image_size[vm.os_image] = max(image_size.get(vm.os_image, 0), pages)
        for v, vm in enumerate(self.scenario.vms):
            if salted:
                st.vm_i[v, I_SLOT_BASE] = base
                base += 1 + max(1, mb_to_pages(vm.os_image_mb))
            else:
                if vm.os_image not in image_base:
                    image_base[vm.os_image] = base
                    base += 1 + image_size[vm.os_image]
                st.vm_i[v, I_SLOT_BASE] = image_base[vm.os_image]
        if not salted:
            # the hash picks within the image's largest size, so all its VMs agree on contents
            for v, vm in enumerate(self.scenario.vms):
                st.vm_i[v, I_IMAGE_PAGES] = image_size[vm.os_image]
        self.st = st._replace(share_ref=np.zeros(base, dtype=np.int32))
        self.st.host_i[H_SHARE_ON] = 1

    def _enable_fifo(self) -> None:
        n_frames = len(self.st.frame_page)
        self.st = self.st._replace(fifo=np.zeros(n_frames, dtype=np.int32))
        self.st.host_i[H_FIFO_ON] = 1
        for v in range(self.n):
            mechanisms.build_fifo(self.st, v)

    def _apply_vm_decision(self, v: int, d: VMDecision, t_ns: float, host: HostView) -> None:
        st = self.st
        vm = self.scenario.vms[v]
        pname = self.policy.name
        row = st.vm_i[v]

        def bad(field_name: str, msg: str) -> PolicyError:
            return PolicyError(pname, f"decision for VM {vm.name!r}: {field_name} {msg}")

        def mb_value(field_name: str, value, lo: float, hi: float) -> int:
            return mb_to_pages(_megabytes(value, lo, hi, lambda msg: bad(field_name, msg)))

        running = self.vm_state[v] == "running"
        if d.victim is not None:
            if d.victim not in VICTIM_CODES:
                raise bad("victim", f"must be one of {', '.join(VICTIM_CODES)}, got {d.victim!r}")
            row[I_VICTIM] = VICTIM_CODES[d.victim]
            if row[I_VICTIM] == V_FIFO and st.host_i[H_FIFO_ON] == 0:
                self._enable_fifo()
                st = self.st
                row = st.vm_i[v]
        if d.host_swap is not None:
            row[I_SWAP_OK] = int(bool(d.host_swap))
        if d.compression is not None:
            row[I_COMPRESS] = int(bool(d.compression))
        if d.compression_cache_pct is not None:
            pct = float(d.compression_cache_pct)
            if not 0 <= pct <= 100:
                raise bad("compression_cache_pct", f"must be within 0..100, got {d.compression_cache_pct!r}")
            row[I_COMP_CAP_Q] = int(pct / 100.0 * mb_to_pages(vm.frames_mb) * Q_PER_PAGE)
        if d.blocked is not None:
            row[I_BLOCKED] = int(bool(d.blocked))
        if d.sample_pages is not None:
            n = int(d.sample_pages)
            if n < 0 or n > 100000:
                raise bad("sample_pages", f"must be within 0..100000, got {d.sample_pages!r}")
        if d.smart_paging_mb is not None:
            row[I_SMART_QUOTA] = mb_value("smart_paging_mb", d.smart_paging_mb, 0, vm.frames_mb)
        if d.host_limit_mb is not None:
            row[I_LIMIT_Q] = mb_value("host_limit_mb", d.host_limit_mb, 0, vm.frames_mb) * Q_PER_PAGE
        if d.host_target_mb is not None:
            # a soft target above the VM's size means "no target": clamp rather than refuse
            target = mb_value("host_target_mb", d.host_target_mb, 0, math.inf)
            row[I_TARGET_Q] = min(target, mb_to_pages(vm.frames_mb)) * Q_PER_PAGE
        if d.report_free_pages is not None:
            self.free_page_reporting[v] = bool(d.report_free_pages)
        if d.populate is not None:
            self.populated[v] = bool(d.populate)
        if d.share_before_swap is not None:
            row[I_SHARE_FIRST] = int(bool(d.share_before_swap))
            if row[I_SHARE_FIRST] and st.host_i[H_SHARE_ON] == 0:
                self._enable_sharing()
                st = self.st
        if d.metrics:
            try:
                metrics = {str(k): float(x) for k, x in d.metrics.items()}
            except (TypeError, ValueError):
                raise bad("metrics", "must map names to numbers") from None
            self.policy_metrics.setdefault(v, {}).update(metrics)
        if not running:
            return
        if d.assigned_mb is not None:
            target = mb_value("assigned_mb", d.assigned_mb, 0, vm.frames_mb)
            if target < row[I_PRESENT]:
                raise bad("assigned_mb", f"cannot shrink memory ({_mb(row[I_PRESENT]):g} MB now); inflate the balloon instead")
            if target > row[I_PRESENT]:
                mechanisms.hot_add(st, v, target)
        if d.balloon_mb is not None:
            if not self.balloon_driver[v] and d.balloon_mb > 0:
                raise bad("balloon_mb", "was set but the VM has no balloon driver")
            target = mb_value("balloon_mb", d.balloon_mb, 0, _mb(row[I_PRESENT]))
            # the balloon never leaves the guest less than its guarantee
            guaranteed_pages = -(-int(row[I_MIN_Q]) // Q_PER_PAGE)
            target = min(target, max(0, int(row[I_PRESENT]) - guaranteed_pages))
            stall, _ = mechanisms.set_balloon(st, v, target, t_ns)
            st.vm_f[v, F_STALL] += stall
            st.vm_f[v, F_CLOCK] += stall
        if row[I_BACKED_Q] > row[I_LIMIT_Q]:
            if row[I_VICTIM] == V_PLUGIN and row[I_SWAP_OK]:
                need = int(math.ceil((row[I_BACKED_Q] - row[I_LIMIT_Q]) / Q_PER_PAGE))
                self._plugin_victims(v, host, t_ns, need)
            if row[I_SWAP_OK]:
                mechanisms.reclaim_to_limit(st, v, t_ns, False)
        if d.host_reclaim_mb:
            if not row[I_SWAP_OK]:
                raise bad("host_reclaim_mb", "needs host_swap allowed for the VM")
            pages = mb_value("host_reclaim_mb", d.host_reclaim_mb, 0, vm.frames_mb)
            if row[I_VICTIM] == V_PLUGIN:
                # the policy picks the victims of every host reclaim it asks for
                pages -= self._plugin_victims(v, host, t_ns, pages)
            mechanisms.reclaim_pages(st, v, pages, t_ns)
        if self.populated.get(v):
            mechanisms.populate(st, v, t_ns)
        if row[I_SMART] > row[I_SMART_QUOTA]:
            mechanisms.release_smart_paging(st, v, t_ns)
        if d.sample_pages is not None:
            self._end_sample(v)
            present = int(row[I_PRESENT])
            if d.sample_pages and present:
                rng = np.random.default_rng([self.scenario.seed, v, self._epoch])
                frames = rng.integers(0, present, size=int(d.sample_pages)).astype(np.int64)
                mechanisms.sample_begin(st, v, frames)
                ends = math.inf if d.sample_s is None else t_ns + float(d.sample_s) * 1e9
                self.samples[v] = (frames, ends)

    def _plugin_victims(self, v: int, host: HostView, t_ns: float, need: int) -> int:
        """Ask the policy for ``need`` host-swap victims of VM v and page them out; how many were."""
        st = self.st
        fb = st.vm_i[v, I_FRAME_BASE]
        present = st.vm_i[v, I_PRESENT]
        candidates = np.flatnonzero(st.host_state[fb:fb + present] == H_RAM).astype(np.int64)
        if need <= 0 or len(candidates) == 0:
            return 0
        chosen = self.hooks.call("select_victims", self.policy.select_victims, host, host.vms[v],
                                 candidates.copy(), need)
        try:
            chosen = np.asarray(chosen, dtype=np.int64).ravel()
        except (TypeError, ValueError):
            raise PolicyError(self.policy.name, "select_victims() must return an array of frame numbers") from None
        if len(chosen) > need or len(np.unique(chosen)) != len(chosen) or not np.isin(chosen, candidates).all():
            raise PolicyError(self.policy.name, f"select_victims() for {self.scenario.vms[v].name!r} must return at most "
                                                f"{need} distinct frames from the candidates")
        return int(mechanisms.evict_frames(st, v, chosen, t_ns))

    def _apply(self, decisions: Decisions, t_ns: float, host: HostView) -> None:
        name = self.policy.name
        if not isinstance(decisions, Decisions):
            raise PolicyError(name, f"on_epoch() must return Decisions, got {type(decisions).__name__}")
        self._apply_host_decision(decisions.host)
        names = self.vm_index
        for vm_name, d in decisions.vms.items():
            if vm_name not in names:
                raise PolicyError(name, f"decision for unknown VM {vm_name!r}")
            if not isinstance(d, VMDecision):
                raise PolicyError(name, f"decision for VM {vm_name!r} must be a VMDecision")
            self._apply_vm_decision(names[vm_name], d, t_ns, host)
        # populate is a standing setting: it holds in the epochs a policy sends the VM no decision
        for v, on in self.populated.items():
            if on and self.vm_state[v] == "running" and self.scenario.vms[v].name not in decisions.vms:
                mechanisms.populate(self.st, v, t_ns)
