"""The epoch loop: lifecycle events, the policy's decisions, the compiled kernel, the series."""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from marshmallow import ValidationError

from ..sdk import Admission, Decisions, HostDecision, Policy, VMDecision
from ..sdk.decisions import SCAN_ORDERS
from ..sdk.views import GuestReport, HostView, MemorySettings, VMView
from . import kernel, mechanisms
from .config import PAGES_PER_MB, Scenario
from .layout import build, mb_to_pages
from .metrics import Recorder, summarize
from .state import (
    F_CLOCK, F_STALL, FAULT_NAMES, H_FIFO_ON,
    H_FREE_Q, H_MIN_FREE_Q, H_SHARE_ON, H_SHARED_FRAMES, H_SMART_USED, H_SWAP_USED, H_TOTAL_Q, H_RAM,
    I_BACKED_Q, I_BLOCKED, I_COMP_CAP_Q, I_COMP_Q, I_COMPRESS, I_COMPRESSED, I_FRAME_BASE, I_LIMIT_Q, I_MIN_Q,
    I_NBALLOON, I_NFREE, I_OOM, I_PAGED, I_PRESENT, I_RESIDENT, I_SHARE_FIRST,
    I_RUNNING, I_SHARED, I_SLOT_BASE, I_SMART, I_SMART_QUOTA, I_SWAP_OK, I_SWAPPED,
    I_TARGET_Q, I_TOUCHED, I_VICTIM, Q_PER_PAGE, V_FIFO, V_PLUGIN, VICTIM_CODES,
)

ENGINE_VERSION = "0.1.0"
Q_PER_MB = PAGES_PER_MB * Q_PER_PAGE


class PolicyError(RuntimeError):
    """The policy did something the engine cannot accept: the run fails, naming the policy."""

    def __init__(self, policy: str, message: str):
        super().__init__(f"policy {policy!r}: {message}")
        self.policy = policy


class RunCancelled(RuntimeError):
    pass


class _HookTimeout(BaseException):
    """Raised by the SIGALRM handler inside a hook that ran too long. A BaseException, so that a
    plugin's ``except Exception`` cannot swallow it; the engine turns it into a PolicyError."""


class HookTimer:
    """Calls policy hooks with a wall-time limit per call.

    In the main thread of a process with ``setitimer`` (a Celery prefork pool process, the CLI),
    an ITIMER_REAL timer and a SIGALRM handler interrupt a hook that overruns, even one stuck in a
    loop or a sleep; the previous SIGALRM handler and timer are restored after every call (a timer
    that was running goes on with the time left). Elsewhere (another thread) no signal can be
    used: the call is timed and fails after it returns. Either way the run fails with a
    PolicyError naming the policy, the hook and the limit. ``limit_s`` None or 0: no limit.
    """

    def __init__(self, policy: str, limit_s: Optional[float]):
        self.policy = policy
        self.limit_s = float(limit_s) if limit_s and limit_s > 0 else None

    def call(self, hook: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self.limit_s is None:
            return fn(*args)
        if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
            return self._with_alarm(hook, fn, args)
        start = time.monotonic()
        result = fn(*args)
        if time.monotonic() - start > self.limit_s:
            raise self._error(hook)
        return result

    def _with_alarm(self, hook: str, fn: Callable[..., Any], args: tuple) -> Any:
        def alarm(_signum: int, _frame: Any) -> None:
            raise _HookTimeout()

        previous = signal.signal(signal.SIGALRM, alarm)
        start = time.monotonic()
        old_delay, old_interval = 0.0, 0.0
        try:
            try:
                old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, self.limit_s)
                result = fn(*args)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if time.monotonic() - start > self.limit_s:     # a hook that replaced our handler
                raise _HookTimeout()
            return result
        except _HookTimeout:
            raise self._error(hook) from None
        finally:
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
            if old_delay > 0:       # someone else's timer: let it run for the time it had left
                left = max(old_delay - (time.monotonic() - start), 1e-6)
                signal.setitimer(signal.ITIMER_REAL, left, old_interval)

    def _error(self, hook: str) -> PolicyError:
        return PolicyError(self.policy, f"{hook}() ran longer than the plugin hook time limit of {self.limit_s:g} s")


@dataclass
class RunResult:
    summary: dict[str, Any]
    series: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


def _mb(pages: float) -> float:
    return pages / PAGES_PER_MB


class Simulation:
    def __init__(self, scenario: Scenario, policy: Policy, *, validate: bool = True,
                 load_trace: Optional[Callable[[str], np.ndarray]] = None,
                 hook_time_limit_s: Optional[float] = None):
        if validate:
            scenario.check()
        if load_trace is None:
            from .traces import load_trace as default_loader
            load_trace = default_loader
        self.scenario = scenario
        self.policy = policy
        self.hooks = HookTimer(policy.name, hook_time_limit_s)
        self.st = build(scenario, load_trace)
        self.n = len(scenario.vms)
        self.epoch_ns = scenario.epoch_s * 1e9
        self.vm_state = ["off"] * self.n          # off, running, refused
        self.ever_ran = [False] * self.n
        self.refusals: list[Optional[str]] = [None] * self.n
        self.boots = [0] * self.n
        self.overhead_q = mb_to_pages(scenario.host.vm_overhead_mb) * Q_PER_PAGE
        self.sharing_rate = 0.0
        self.sharing_sequential = False
        self.sharing_salted: Optional[bool] = None
        self.host_label = ""
        self.samples: dict[int, np.ndarray] = {}
        self.free_page_reporting: dict[int, bool] = {}
        self.populated: dict[int, bool] = {}
        self.vm_index = {vm.name: i for i, vm in enumerate(scenario.vms)}
        self.policy_metrics: dict[int, dict[str, float]] = {}
        self.sample_results: dict[int, tuple[int, int]] = {}
        self.last_counts = self.st.vm_c.copy()
        self.events_log: list[dict[str, Any]] = []
        self.recorder = Recorder(scenario, self.n)
        self.balloon_driver = [vm.balloon_driver_at_boot for vm in scenario.vms]
        self.guaranteed_mb = [0.0] * self.n

    # --- views ---------------------------------------------------------------------------------

    def _vm_view(self, v: int, deltas: Optional[np.ndarray]) -> VMView:
        vm = self.scenario.vms[v]
        row = self.st.vm_i[v]
        guest = None
        if type(self.policy).trusts_guest:
            guest = GuestReport(committed_mb=_mb(row[I_TOUCHED]), free_mb=_mb(row[I_NFREE]),
                                paged_mb=_mb(row[I_PAGED]))
        faults = {}
        refs = 0
        if deltas is not None:
            refs = int(deltas[0])
            faults = {name: int(deltas[i + 1]) for i, name in enumerate(FAULT_NAMES)}
        return VMView(
            name=vm.name, index=v, state=self.vm_state[v],
            settings=MemorySettings(
                memory_mb=vm.memory_mb, startup_mb=vm.startup, minimum_mb=vm.minimum,
                maximum_mb=vm.maximum, buffer_pct=vm.buffer_pct, weight=vm.weight,
                reservation_mb=vm.reservation_mb, limit_mb=vm.limit, shares=vm.effective_shares),
            balloon_driver=self.balloon_driver[v], boots=self.boots[v],
            present_mb=_mb(row[I_PRESENT]), balloon_mb=_mb(row[I_NBALLOON]),
            resident_mb=_mb(row[I_RESIDENT]), shared_mb=_mb(row[I_SHARED]),
            compressed_mb=_mb(row[I_COMPRESSED]), compressed_size_mb=row[I_COMP_Q] / Q_PER_MB,
            host_swapped_mb=_mb(row[I_SWAPPED]),
            smart_paged_mb=_mb(row[I_SMART]), refs=refs, faults=faults,
            blocked=bool(row[I_BLOCKED]), guaranteed_mb=row[I_MIN_Q] / Q_PER_MB, active_sample=self.sample_results.get(v), guest=guest)

    def host_view(self, time_s: float, epoch: int, deltas: Optional[np.ndarray] = None) -> HostView:
        st = self.st
        host = self.scenario.host
        running = sum(1 for s in self.vm_state if s == "running")
        shared_pages = int(st.vm_i[:, I_SHARED].sum())
        shared_frames = int(st.host_i[H_SHARED_FRAMES])
        return HostView(
            time_s=time_s, epoch=epoch, epoch_s=self.scenario.epoch_s,
            memory_mb=host.memory_mb, reserve_mb=host.reserve_mb, vm_overhead_mb=host.vm_overhead_mb,
            available_mb=(st.host_i[H_TOTAL_Q] - running * self.overhead_q) / Q_PER_MB,
            free_mb=st.host_i[H_FREE_Q] / Q_PER_MB,
            shared_frames_mb=_mb(shared_frames), sharing_saved_mb=_mb(shared_pages - shared_frames),
            compression_cache_mb=float(st.vm_i[:, I_COMP_Q].sum()) / Q_PER_MB,
            swap_used_mb=_mb(st.host_i[H_SWAP_USED]), smart_paging_mb=_mb(st.host_i[H_SMART_USED]),
            swap_device=host.swap_device, seed=self.scenario.seed,
            vms=tuple(self._vm_view(v, None if deltas is None else deltas[v]) for v in range(self.n)))

    # --- lifecycle -----------------------------------------------------------------------------

    def _power_on(self, v: int, t_ns: float, restart: bool) -> None:
        vm = self.scenario.vms[v]
        admission = self.hooks.call("admit", self.policy.admit, self.host_view(t_ns / 1e9, self._epoch),
                                    self._vm_view(v, None), restart)
        if not isinstance(admission, Admission):
            raise PolicyError(self.policy.name, f"admit() must return an Admission, got {type(admission).__name__}")
        if not admission.admit:
            self.vm_state[v] = "refused"
            self.refusals[v] = admission.reason or "refused by the policy"
            self._log(t_ns, vm.name, "refused", self.refusals[v])
            return
        assigned = admission.assigned_mb if admission.assigned_mb is not None else vm.startup
        if not 0 < assigned <= vm.frames_mb:
            raise PolicyError(self.policy.name, f"admitted {vm.name!r} with {assigned} MB; it must be within 1..{vm.frames_mb} MB")
        if admission.smart_paging_mb < 0 or admission.smart_paging_mb > assigned:
            raise PolicyError(self.policy.name, f"smart_paging_mb for {vm.name!r} must be within 0..{assigned}")
        if admission.smart_paging_mb and not restart:
            raise PolicyError(self.policy.name, f"Smart Paging is for restarts only, not the cold start of {vm.name!r}")
        guarantee = float(vm.reservation_mb if admission.guaranteed_mb is None else admission.guaranteed_mb)
        if not (math.isfinite(guarantee) and 0 <= guarantee <= assigned):
            raise PolicyError(self.policy.name, f"guaranteed_mb for {vm.name!r} must be within 0..{assigned} MB, got {admission.guaranteed_mb!r}")
        st = self.st
        refusal = self._admission_control(v, guarantee)
        if refusal is None and st.host_i[H_FREE_Q] < self.overhead_q:
            refusal = f"no host memory for the VM's {self.scenario.host.vm_overhead_mb} MB overhead"
        if refusal is not None:
            self.vm_state[v] = "refused"
            self.refusals[v] = refusal
            self._log(t_ns, vm.name, "refused", refusal)
            return
        st.host_i[H_FREE_Q] -= self.overhead_q
        mechanisms.power_on(st, v, mb_to_pages(assigned), t_ns)
        st.vm_i[v, I_SMART_QUOTA] = mb_to_pages(admission.smart_paging_mb)
        st.vm_i[v, I_MIN_Q] = mb_to_pages(guarantee) * Q_PER_PAGE
        self.guaranteed_mb[v] = guarantee
        st.vm_i[v, I_RUNNING] = 1
        self.populated[v] = bool(admission.populate)
        if admission.populate:
            mechanisms.populate(st, v, t_ns)
        self.vm_state[v] = "running"
        self.ever_ran[v] = True
        self.refusals[v] = None
        self.boots[v] += 1
        self._log(t_ns, vm.name, "restart" if restart else "start",
                  f"{assigned} MB" + (f", Smart Paging up to {admission.smart_paging_mb} MB" if admission.smart_paging_mb else ""))

    def _admission_control(self, v: int, guarantee: float) -> Optional[str]:
        """The engine's own rule, whatever the policy: every running VM's guarantee and overhead
        must fit in the host's memory for VMs (W02 6.1: power-on reserves min + overhead), or
        guarantees could not all be honoured. The reason for a refusal, or None."""
        host = self.scenario.host
        usable = host.memory_mb - host.reserve_mb
        taken = sum(self.guaranteed_mb[u] + host.vm_overhead_mb
                    for u in range(self.n) if u != v and self.vm_state[u] == "running")
        if taken + guarantee + host.vm_overhead_mb > usable:
            return (f"admission control: its {guarantee:g} MB guarantee + {host.vm_overhead_mb} MB overhead do not fit "
                    f"beside the {taken:g} MB that running VMs' guarantees and overheads hold of the host's {usable} MB for VMs")
        return None

    def _power_off(self, v: int, t_ns: float, why: str) -> None:
        st = self.st
        mechanisms.power_off(st, v)
        st.host_i[H_FREE_Q] += self.overhead_q
        st.vm_i[v, I_RUNNING] = 0
        self.vm_state[v] = "off"
        self.guaranteed_mb[v] = 0.0
        self.samples.pop(v, None)
        self.sample_results.pop(v, None)
        self._log(t_ns, self.scenario.vms[v].name, why, "")

    def _apply_events(self, t0: float, t1: float) -> None:
        def due(at_s: float) -> bool:
            at = at_s * 1e9
            return t0 <= at < t1 or (t0 == 0 and at <= 0)

        for ev in self.scenario.policy_events:
            if ev.policy == self.policy.name and due(ev.at_s):
                self._change_params(ev.changes, t0)
        pending = []
        for v, vm in enumerate(self.scenario.vms):
            for ev in vm.events:
                if due(ev.at_s):
                    pending.append((ev.at_s, v, ev.action))
        for at, v, action in sorted(pending):
            if action == "load_balloon_driver":
                if not self.balloon_driver[v]:
                    self.balloon_driver[v] = True
                    self._log(t0, self.scenario.vms[v].name, "balloon driver", "loaded: the host can balloon this guest from now on")
            elif action == "start" and self.vm_state[v] != "running":
                self._power_on(v, t0, restart=False)
            elif action == "stop" and self.vm_state[v] == "running":
                self._power_off(v, t0, "stop")
                self.hooks.call("on_stop", self.policy.on_stop, self.host_view(t0 / 1e9, self._epoch),
                                self._vm_view(v, None))
            elif action == "restart" and self.vm_state[v] == "running":
                self._power_off(v, t0, "shutdown for restart")
                self._power_on(v, t0, restart=True)

    def _change_params(self, changes: dict[str, Any], t_ns: float) -> None:
        """A scenario's policy event: the policy's parameters change from this epoch on."""
        policy = self.policy
        merged = {**policy.params, **changes}
        try:
            loaded = type(policy).Params().load(merged)
        except ValidationError as err:
            raise PolicyError(policy.name, f"parameter change at {t_ns / 1e9:g} s: {err.messages}") from None
        before = dict(policy.params)
        self.hooks.call("update_params", policy.update_params, loaded)
        detail = ", ".join(f"{k} {before.get(k)!r} -> {loaded[k]!r}" for k in sorted(changes))
        self._log(t_ns, "", "parameters", f"{policy.name}: {detail}")

    def _log(self, t_ns: float, vm: str, what: str, detail: str) -> None:
        self.events_log.append({"time_s": t_ns / 1e9, "vm": vm, "event": what, "detail": detail})

    # --- decisions -----------------------------------------------------------------------------

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
            try:
                reserve = float(d.min_free_mb)
            except (TypeError, ValueError):
                raise PolicyError(name, f"min_free_mb must be a number, got {d.min_free_mb!r}") from None
            if not (math.isfinite(reserve) and 0 <= reserve <= self.scenario.host.memory_mb):
                raise PolicyError(name, f"min_free_mb must be within 0..{self.scenario.host.memory_mb} MB, got {d.min_free_mb!r}")
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
            from .state import I_IMAGE_PAGES
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
            try:
                x = float(value)
            except (TypeError, ValueError):
                raise bad(field_name, f"must be a number, got {value!r}") from None
            if not (math.isfinite(x) and lo <= x <= hi):
                raise bad(field_name, f"must be within {lo:g}..{hi:g} MB, got {value!r}")
            return mb_to_pages(x)

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
                self._plugin_victims(v, host, t_ns)
            if row[I_SWAP_OK]:
                mechanisms.reclaim_to_limit(st, v, t_ns, False)
        if d.host_reclaim_mb:
            if not row[I_SWAP_OK]:
                raise bad("host_reclaim_mb", "needs host_swap allowed for the VM")
            pages = mb_value("host_reclaim_mb", d.host_reclaim_mb, 0, vm.frames_mb)
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

    def _plugin_victims(self, v: int, host: HostView, t_ns: float) -> None:
        st = self.st
        fb = st.vm_i[v, I_FRAME_BASE]
        present = st.vm_i[v, I_PRESENT]
        candidates = np.flatnonzero(st.host_state[fb:fb + present] == H_RAM).astype(np.int64)
        need = int(math.ceil((st.vm_i[v, I_BACKED_Q] - st.vm_i[v, I_LIMIT_Q]) / Q_PER_PAGE))
        chosen = self.hooks.call("select_victims", self.policy.select_victims, host, host.vms[v],
                                 candidates.copy(), need)
        try:
            chosen = np.asarray(chosen, dtype=np.int64).ravel()
        except (TypeError, ValueError):
            raise PolicyError(self.policy.name, "select_victims() must return an array of frame numbers") from None
        if len(chosen) > need or len(np.unique(chosen)) != len(chosen) or not np.isin(chosen, candidates).all():
            raise PolicyError(self.policy.name, f"select_victims() for {self.scenario.vms[v].name!r} must return at most "
                                                f"{need} distinct frames from the candidates")
        mechanisms.evict_frames(st, v, chosen, t_ns)

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

    # --- the run -------------------------------------------------------------------------------

    def run(self, progress: Optional[Callable[[float], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> RunResult:
        sc = self.scenario
        n_epochs = max(1, int(math.ceil(sc.duration_s / sc.epoch_s - 1e-9)))
        slice_ns = sc.slice_ms * 1e6
        self._epoch = 0
        self._apply_host_decision(self.hooks.call("setup", self.policy.setup, self.host_view(0.0, 0)))
        deltas = None
        for epoch in range(n_epochs):
            self._epoch = epoch
            t0 = epoch * self.epoch_ns
            t1 = min((epoch + 1) * self.epoch_ns, sc.duration_s * 1e9)
            self._apply_events(t0, t1)
            # VMs that are off keep their clocks at the epoch start
            for v in range(self.n):
                if self.vm_state[v] != "running" or self.st.vm_f[v, F_CLOCK] < t0:
                    self.st.vm_f[v, F_CLOCK] = max(self.st.vm_f[v, F_CLOCK], t0)
            self._end_due_samples(t0)
            view = self.host_view(t0 / 1e9, epoch, deltas)
            self._apply(self.hooks.call("on_epoch", self.policy.on_epoch, view), t0, view)
            self._share(t1 - t0)
            self._report_free_pages()
            kernel.run_epoch(self.st, t0, t1, slice_ns)
            for v in range(self.n):
                if self.vm_state[v] == "running" and self.st.vm_i[v, I_OOM]:
                    self._log(t1, sc.vms[v].name, "oom", "the guest's page file is full")
            counts = self.st.vm_c.copy()
            deltas = counts - self.last_counts
            self.last_counts = counts
            self.recorder.record(self, t1, deltas)
            self.policy_metrics = {}         # reported for this epoch only
            if progress is not None:
                progress((epoch + 1) / n_epochs)
            if should_stop is not None and should_stop():
                raise RunCancelled(f"cancelled after {t1 / 1e9:g} s of {sc.duration_s:g} s")
        summary = summarize(self)
        return RunResult(summary=summary, series=self.recorder.series(), events=self.events_log)

    def _share(self, span_ns: float) -> None:
        if self.sharing_rate <= 0 or self.st.host_i[H_SHARE_ON] == 0:
            return
        pages = int(round(self.sharing_rate * span_ns / 1e9))
        for v in range(self.n):
            if self.vm_state[v] == "running":
                mechanisms.share_scan(self.st, v, pages, self.sharing_sequential)

    def _end_sample(self, v: int) -> None:
        sample = self.samples.pop(v, None)
        if sample is not None:
            frames, _ = sample
            touched, counted = mechanisms.sample_count(self.st, v, frames)
            self.sample_results[v] = (int(touched), int(counted))

    def _end_due_samples(self, t_ns: float) -> None:
        for v, (_, ends) in list(self.samples.items()):
            if ends <= t_ns + 1e-3:
                self._end_sample(v)

    def _report_free_pages(self) -> None:
        for v, on in self.free_page_reporting.items():
            if on and self.vm_state[v] == "running":
                mechanisms.report_free_pages(self.st, v)


def simulate(scenario: Scenario, policy: Policy, progress: Optional[Callable[[float], None]] = None,
             should_stop: Optional[Callable[[], bool]] = None, *, validate: bool = True,
             load_trace: Optional[Callable[[str], np.ndarray]] = None,
             hook_time_limit_s: Optional[float] = None) -> RunResult:
    """Run ``scenario`` under ``policy``; a pure function of both and the scenario's seed.
    ``hook_time_limit_s``: longest wall time of one call of a policy hook (HookTimer); a hook
    that runs longer fails the run with a PolicyError. None or 0: no limit."""
    sim = Simulation(scenario, policy, validate=validate, load_trace=load_trace,
                     hook_time_limit_s=hook_time_limit_s)
    return sim.run(progress=progress, should_stop=should_stop)
