"""The epoch loop: lifecycle events, the policy's decisions, the compiled kernel, the series."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from ..sdk import Admission, Policy, PolicyParameterError
from ..sdk.views import GuestReport, HostView, MemorySettings, VMView
from . import kernel, mechanisms
from .apply import DecisionApplier
from .config import PAGES_PER_MB, Scenario
from .hooks import HookTimer, PolicyError, RunCancelled
from .layout import build, mb_to_pages
from .metrics import Recorder, summarize
from .state import (
    F_CLOCK, FAULT_NAMES, H_FREE_Q, H_SHARE_ON, H_SHARED_FRAMES, H_SMART_USED, H_SWAP_USED, H_TOTAL_Q, I_BLOCKED,
    I_COMP_Q, I_COMPRESSED, I_MIN_Q, I_NBALLOON, I_NFREE, I_OOM, I_PAGED, I_PRESENT, I_RESIDENT, I_RUNNING,
    I_SHARED, I_SMART, I_SMART_QUOTA, I_SWAPPED, I_TOUCHED, Q_PER_PAGE,
)

ENGINE_VERSION = "0.2.0"
Q_PER_MB = PAGES_PER_MB * Q_PER_PAGE


@dataclass
class RunResult:
    summary: dict[str, Any]
    series: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


def _mb(pages: float) -> float:
    return pages / PAGES_PER_MB


class Simulation(DecisionApplier):
    """One run. ``trusts_guest``: the trust level the run uses, fixed before it starts: the value
    the plugin registry approved, or the class's as it was when the policy was loaded (default:
    the class's now). Views are built from it alone, and a policy whose class or instance says
    otherwise, now or after any hook call, fails the run."""

    def __init__(self, scenario: Scenario, policy: Policy, *, validate: bool = True,
                 load_trace: Optional[Callable[[str], np.ndarray]] = None,
                 hook_time_limit_s: Optional[float] = None, trusts_guest: Optional[bool] = None):
        if validate:
            scenario.check()
        if load_trace is None:
            from .traces import load_trace as default_loader
            load_trace = default_loader
        self.scenario = scenario
        self.policy = policy
        self.trusts_guest = bool(type(policy).trusts_guest) if trusts_guest is None else bool(trusts_guest)
        self._check_trust("the policy's constructor", repair=False)
        self.hooks = HookTimer(policy.name, hook_time_limit_s, after=self._check_trust)
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

    # --- views ---------------------------------------------------------------------------------

    def _vm_view(self, v: int, deltas: Optional[np.ndarray]) -> VMView:
        vm = self.scenario.vms[v]
        row = self.st.vm_i[v]
        guest = None
        if self.trusts_guest:
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

    def _check_trust(self, hook: str, repair: bool = True) -> None:
        """A policy cannot change what it may see: its class and instance must still say the trust
        level the run was started with. If not, the run fails, naming the policy; a change made
        during the run is undone first (a worker process runs other runs of the class)."""
        cls = type(self.policy)
        declared = (getattr(cls, "trusts_guest", None), getattr(self.policy, "trusts_guest", None))
        if all(isinstance(x, bool) and x == self.trusts_guest for x in declared):
            return
        if repair:
            try:
                Policy.trusts_guest = False          # the base class's, in case the plugin changed it
                cls.trusts_guest = self.trusts_guest
                vars(self.policy).pop("trusts_guest", None)
            except (AttributeError, TypeError):     # a metaclass or __slots__ that refuses
                pass
        after = "" if hook.startswith("the ") else "()"
        raise PolicyError(self.policy.name, f"{hook}{after} changed trusts_guest (class {declared[0]!r}, instance "
                                            f"{declared[1]!r}); a policy's trust level is fixed when it is loaded "
                                            f"(here {self.trusts_guest}) and cannot be changed by the plugin")

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
        taken = sum(self.st.vm_i[u, I_MIN_Q] / Q_PER_MB + host.vm_overhead_mb
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
            loaded = type(policy).load_params(merged)
        except PolicyParameterError as err:
            raise PolicyError(policy.name, f"parameter change at {t_ns / 1e9:g} s: {err.messages}") from None
        before = dict(policy.params)
        self.hooks.call("update_params", policy.update_params, loaded)
        detail = ", ".join(f"{k} {before.get(k)!r} -> {loaded[k]!r}" for k in sorted(changes))
        self._log(t_ns, "", "parameters", f"{policy.name}: {detail}")

    def _log(self, t_ns: float, vm: str, what: str, detail: str) -> None:
        self.events_log.append({"time_s": t_ns / 1e9, "vm": vm, "event": what, "detail": detail})

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
             hook_time_limit_s: Optional[float] = None, trusts_guest: Optional[bool] = None) -> RunResult:
    """Run ``scenario`` under ``policy``; a pure function of both and the scenario's seed.
    ``hook_time_limit_s``: longest wall time of one call of a policy hook (HookTimer); a hook
    that runs longer fails the run with a PolicyError. None or 0: no limit. ``trusts_guest``:
    the trust level approved for the policy (see Simulation)."""
    sim = Simulation(scenario, policy, validate=validate, load_trace=load_trace,
                     hook_time_limit_s=hook_time_limit_s, trusts_guest=trusts_guest)
    return sim.run(progress=progress, should_stop=should_stop)
