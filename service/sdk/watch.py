"""The contract kit's watched run: the built-in scenarios it runs a policy on, and ``run_checked``,
which wraps a policy's hooks to check what they return and see, and checks the engine's books
after epochs. ``service.sdk.testing`` is the module to import; this one keeps it short."""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..engine import ContentMix, Event, Host, Phase, PolicyError, RunResult, Scenario, Simulation, VM
from ..engine.invariants import check as check_books
from .decisions import Admission, Decisions, HostDecision, VMDecision
from .policy import Policy
from .views import HostView, VMView


def policy_hooks() -> tuple[str, ...]:
    """The hooks of the contract: ``Policy``'s public instance methods, in declaration order."""
    return tuple(name for name, member in vars(Policy).items()
                 if not name.startswith("_") and inspect.isfunction(member))


# --- the built-in scenarios ----------------------------------------------------------------

def _vm(name: str, phases: tuple[Phase, ...], memory_mb: int = 128, **kw: Any) -> VM:
    return VM(name=name, memory_mb=memory_mb, os_mb=16, os_image="contract-os", os_image_mb=64,
              phases=phases, **kw)


def _busy(kind: str, footprint_mb: float, write_ratio: float = 0.3) -> Phase:
    return Phase(kind=kind, footprint_mb=footprint_mb, duration_s=60, write_ratio=write_ratio, compute_ns=1000,
                 content=ContentMix(zero=0.05, shared=0.2, compressible=0.5))


IDLE = Phase(kind="idle", duration_s=60)


def _scenario(name: str, description: str, host_mb: int, vms: tuple[VM, ...], seed: int) -> Scenario:
    return Scenario(host=Host(memory_mb=host_mb, vm_overhead_mb=4, swap_device="ssd"), vms=vms,
                    duration_s=2.0, epoch_s=0.25, seed=seed, name=f"contract-{name}", description=description)


#: Small scenarios (a few hundred MB, 2 simulated seconds, 8 epochs) that exercise every hook.
SCENARIOS: dict[str, Scenario] = {
    "cold_start": _scenario(
        "cold_start", "Two VMs boot on a roomy host, one half a second after the other, with "
        "Dynamic Memory settings below their configured size.", 512,
        (_vm("a", (_busy("zipf", 64),)),
         _vm("b", (_busy("uniform", 32),), startup_mb=96, minimum_mb=64, maximum_mb=128,
             events=(Event(0.5, "start"),))), seed=11),
    "stop_restart": _scenario(
        "stop_restart", "One VM restarts (admit with restart=True); another stops (on_stop) and "
        "starts again.", 512,
        (_vm("a", (_busy("hotcold", 48),), startup_mb=96, minimum_mb=64, maximum_mb=128,
             events=(Event(0.0, "start"), Event(0.75, "restart"))),
         _vm("b", (_busy("zipf", 48),), events=(Event(0.0, "start"), Event(0.5, "stop"), Event(1.25, "start")))),
        seed=12),
    "memory_pressure": _scenario(
        "memory_pressure", "Two VMs of 128 MB on a 192 MB host, each with a 100 MB working set: "
        "together they exceed the host.", 192,
        (_vm("a", (_busy("zipf", 100, write_ratio=0.5),), startup_mb=96, minimum_mb=64, maximum_mb=128),
         _vm("b", (_busy("hotcold", 100),), startup_mb=96, minimum_mb=64, maximum_mb=128)), seed=13),
    "idle_vm": _scenario(
        "idle_vm", "An idle VM beside a busy one: it touches only its OS and does no references.", 256,
        (_vm("busy", (_busy("zipf", 80),)), _vm("idle", (IDLE,))), seed=14),
    "no_balloon_driver": _scenario(
        "no_balloon_driver", "Host memory pressure where one VM has no balloon driver: a policy "
        "must not balloon it.", 192,
        (_vm("tools", (_busy("zipf", 100),)), _vm("legacy", (_busy("uniform", 80),), balloon_driver=False)),
        seed=15),
}


# --- a watched run -------------------------------------------------------------------------

@dataclass
class CheckedRun:
    """A run under watch: its result and what the policy was called with."""

    scenario: Scenario
    result: RunResult
    calls: dict[str, int] = field(default_factory=dict)      # hook -> times called
    restarts_admitted: int = 0                                 # admit() calls with restart=True
    hook_seconds: float = 0.0
    run_seconds: float = 0.0
    guest_reports_seen: int = 0
    last_view: Optional[HostView] = None                       # the last on_epoch view


class ContractViolation(AssertionError):
    """A broken rule of the contract, found while the policy ran."""


class _Watch:
    """Wraps the hooks of one policy instance: checks what they return and what they are shown."""

    def __init__(self, policy: Policy, scenario: Scenario):
        self.policy = policy
        self.scenario = scenario
        self.cls_trusts = bool(type(policy).trusts_guest)
        self.calls: dict[str, int] = {}
        self.restarts = 0
        self.hook_seconds = 0.0
        self.guest_reports = 0
        self.last_view: Optional[HostView] = None
        self.where = "setup"
        self.vm_names = {vm.name for vm in scenario.vms}

    def fail(self, message: str) -> AssertionError:
        return ContractViolation(f"policy {self.policy.name!r}, scenario {self.scenario.name!r} ({self.where}): {message}")

    def look(self, hook: str, view: Any) -> None:
        vms = view.vms if isinstance(view, HostView) else (view,) if isinstance(view, VMView) else ()
        for vm in vms:
            if vm.guest is not None:
                self.guest_reports += 1
                if not self.cls_trusts:
                    raise self.fail(f"{hook}() was shown a guest report for VM {vm.name!r} although the policy "
                                    "does not trust the guest (trusts_guest = False)")

    def install(self) -> None:
        for hook in policy_hooks():
            setattr(self.policy, hook, self.wrap(hook, getattr(self.policy, hook)))

    def wrap(self, hook: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            self.calls[hook] = self.calls.get(hook, 0) + 1
            for arg in list(args) + list(kwargs.values()):
                self.look(hook, arg)
            if args and isinstance(args[0], HostView):
                self.where = f"{hook}() in epoch {args[0].epoch}, t={args[0].time_s:g} s"
                if hook == "on_epoch":
                    self.last_view = args[0]
            if hook == "admit" and (kwargs.get("restart") or (len(args) > 2 and args[2])):
                self.restarts += 1
            started = time.perf_counter()
            try:
                out = method(*args, **kwargs)
            except ContractViolation:
                raise
            except Exception as exc:
                raise self.fail(f"{hook}() raised {type(exc).__name__}: {exc}") from exc
            finally:
                self.hook_seconds += time.perf_counter() - started
            self.check_return(hook, out)
            return out
        watched.__name__ = hook
        return watched

    def check_return(self, hook: str, out: Any) -> None:
        def wrong(expected: str) -> AssertionError:
            return self.fail(f"{hook}() must return {expected}, got {type(out).__name__}: {out!r:.200}")

        if hook == "setup" and not isinstance(out, HostDecision):
            raise wrong("a HostDecision")
        if hook == "admit":
            if not isinstance(out, Admission):
                raise wrong("an Admission")
            if not isinstance(out.admit, (bool, np.bool_)):
                raise self.fail(f"Admission.admit must be a bool, got {out.admit!r}")
        if hook in ("on_stop", "update_params") and out is not None:
            raise wrong("None")
        if hook == "on_epoch":
            if not isinstance(out, Decisions):
                raise wrong("Decisions")
            if not isinstance(out.host, HostDecision):
                raise self.fail(f"Decisions.host must be a HostDecision, got {type(out.host).__name__}")
            for name, decision in out.vms.items():
                if name not in self.vm_names:
                    raise self.fail(f"Decisions.vms names VM {name!r}, which is not in the scenario")
                if not isinstance(decision, VMDecision):
                    raise self.fail(f"Decisions.vms[{name!r}] must be a VMDecision, got {type(decision).__name__}")


#: Checking the books costs at most this much more than the run itself (seconds), so that small
#: scenarios are checked after every epoch.
CHECK_ALLOWANCE_S = 0.5


def load_scenario(path: str | Path) -> Scenario:
    """A scenario file (the format of ``vmemlab simulate``), for ``run_checked``; its ``policies``
    list, if any, is ignored. Raises ``ValueError`` listing every problem in the file."""
    from ..scenario import load_scenario_file
    scenario, _ = load_scenario_file(path)
    return scenario


def run_checked(policy: Policy, scenario: Scenario) -> CheckedRun:
    """Run ``scenario`` under ``policy`` (an instance; its hooks get wrapped) and check the engine's
    books after every epoch while checking costs no more than running (plus ``CHECK_ALLOWANCE_S``),
    and always after the last, so that a checked run costs at most about twice a plain one; raises
    AssertionError naming the policy, scenario and epoch."""
    if bool(getattr(policy, "trusts_guest", False)) != bool(type(policy).trusts_guest):
        raise AssertionError(f"policy {policy.name!r}: the instance says trusts_guest={policy.trusts_guest!r} but the "
                             f"class says {type(policy).trusts_guest!r}; trust is declared on the class, where "
                             "listings and the registry read it")
    watch = _Watch(policy, scenario)
    watch.install()
    sim = Simulation(scenario, policy)
    epochs = [0]
    cost = {"running": 0.0, "checking": 0.0, "since": time.perf_counter()}

    def after_epoch(fraction: float) -> None:
        epochs[0] += 1
        now = time.perf_counter()
        cost["running"] += now - cost["since"]
        if cost["checking"] <= cost["running"] + CHECK_ALLOWANCE_S or fraction >= 1.0:
            _check(epochs[0])
            cost["checking"] += time.perf_counter() - now
        cost["since"] = time.perf_counter()

    def _check(epoch: int) -> None:
        try:
            check_books(sim.st, sim.overhead_q)
        except AssertionError as exc:
            raise AssertionError(
                f"policy {policy.name!r}, scenario {scenario.name!r}: the engine's books do not balance after "
                f"epoch {epoch}: {exc}. A policy cannot touch engine state, so this is an engine bug: "
                "please report it with this scenario") from exc

    started = time.perf_counter()
    try:
        result = sim.run(progress=after_epoch)
    except PolicyError as exc:
        raise watch.fail(f"the engine refused a decision: {exc}") from exc
    elapsed = time.perf_counter() - started
    return CheckedRun(scenario=scenario, result=result, calls=dict(watch.calls), restarts_admitted=watch.restarts,
                      hook_seconds=watch.hook_seconds, run_seconds=elapsed,
                      guest_reports_seen=watch.guest_reports, last_view=watch.last_view)
