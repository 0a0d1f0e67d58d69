"""The contract test kit: checks that a policy class keeps the plugin contract.

Run it against your own policy, in one call::

    from service.sdk.testing import check_policy
    check_policy(MyPolicy)                      # raises AssertionError listing every broken rule

or one pytest test per check, so that a failure names the rule it broke::

    @pytest.mark.parametrize("case", contract_test_cases(MyPolicy))
    def test_contract(case):
        case()

What it checks, each as a function in ``CONTRACT_CHECKS``:

- the class: a ``Policy`` subclass with a usable ``name``, its own ``version``, a boolean
  ``trusts_guest``;
- its parameters: ``Params`` is a marshmallow ``Schema``, every field has a default, ``create({})``
  works, an unknown parameter is refused with ``PolicyParameterError``, ``parameter_schema()`` is
  JSON and its defaults load back;
- its behaviour, on small built-in scenarios (``SCENARIOS``: cold starts, a stop and a restart,
  two VMs whose working sets exceed the host, an idle VM, a VM without a balloon driver): every
  hook returns what the contract says, the engine accepts every decision (no ``PolicyError``), the
  engine's books balance after every epoch, a policy that does not trust the guest never sees a
  guest report, hooks stay cheap, and the same seed gives the same summary and series.

``run_checked(policy, scenario)`` runs any scenario with the same watch, for your own tests;
``load_scenario(path)`` reads a scenario file for it.
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np
from marshmallow import Schema

from ..engine import ContentMix, Event, Host, Phase, PolicyError, RunResult, Scenario, Simulation, VM
from ..engine.invariants import check as check_books
from .decisions import Admission, Decisions, HostDecision, VMDecision
from .policy import NAME_PATTERN, Policy, PolicyParameterError
from .views import HostView, VMView

ParamsArg = Optional[Mapping[str, Any]]

#: Longest a run of one built-in scenario may take, wall clock, engine included.
RUN_SECONDS = 60.0
#: Longest a policy's hooks may take in total over one built-in scenario (8 epochs, 2-3 VMs).
HOOK_SECONDS = 5.0



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


def _create(policy_cls: type[Policy], params: ParamsArg) -> Policy:
    try:
        return policy_cls.create(dict(params or {}))
    except Exception as exc:
        raise AssertionError(f"{policy_cls.__name__}.create({dict(params or {})!r}) failed: "
                             f"{type(exc).__name__}: {exc}") from exc


def _run_builtin(policy_cls: type[Policy], params: ParamsArg, scenario_name: str) -> CheckedRun:
    scenario = SCENARIOS[scenario_name]
    run = run_checked(_create(policy_cls, params), scenario)
    label = f"policy {policy_cls.name!r}, scenario {scenario.name!r}"
    if run.hook_seconds > HOOK_SECONDS:
        raise AssertionError(f"{label}: hooks took {run.hook_seconds:.1f} s in all (limit {HOOK_SECONDS:g} s for "
                             "8 epochs): hooks run once per epoch or per batch and must not loop over pages in Python")
    if run.run_seconds > RUN_SECONDS:
        raise AssertionError(f"{label}: the run took {run.run_seconds:.1f} s (limit {RUN_SECONDS:g} s)")
    return run


# --- the checks ----------------------------------------------------------------------------

def check_identity(policy_cls: type[Policy], params: ParamsArg = None) -> None:
    """A Policy subclass with a usable name, its own version and a boolean trusts_guest."""
    assert isinstance(policy_cls, type) and issubclass(policy_cls, Policy), (
        f"{policy_cls!r} is not a subclass of service.sdk.Policy")
    label = policy_cls.__name__
    name = policy_cls.name
    assert isinstance(name, str) and name, f"{label}.name must be a non-empty string, got {name!r}"
    assert NAME_PATTERN.fullmatch(name), (
        f"{label}.name {name!r} must be letters, digits, '-' and '_' (it is an entry-point name and the "
        "NAME in --param NAME.key=value)")
    version = policy_cls.version
    assert isinstance(version, str) and version.strip(), f"{label}.version must be a non-empty string, got {version!r}"
    assert any("version" in vars(k) for k in policy_cls.__mro__ if k is not Policy and issubclass(k, Policy)), (
        f"{label} must set its own version (runs record it and workers with another version refuse the run)")
    assert isinstance(policy_cls.trusts_guest, bool), f"{label}.trusts_guest must be True or False"
    assert isinstance(policy_cls.summary, str), f"{label}.summary must be a string"
    for hook in policy_hooks():
        assert callable(getattr(policy_cls, hook, None)), f"{label}.{hook} must be a method"


def check_parameters_have_defaults(policy_cls: type[Policy], params: ParamsArg = None) -> None:
    """Params is a marshmallow Schema, every field has a default, and create({}) builds the policy."""
    label = policy_cls.__name__
    assert isinstance(policy_cls.Params, type) and issubclass(policy_cls.Params, Schema), (
        f"{label}.Params must be a marshmallow Schema subclass")
    schema = policy_cls.Params()
    missing = sorted(name for name, fld in schema.fields.items() if _no_default(fld))
    assert not missing, (f"{label}.Params fields without a default: {', '.join(missing)} "
                         "(give each a load_default, so that the policy runs with no parameters)")
    for given in ({}, None):
        try:
            policy = policy_cls.create(given)
        except Exception as exc:
            raise AssertionError(f"{label}.create({given!r}) failed: {type(exc).__name__}: {exc}") from exc
        assert isinstance(policy, policy_cls), f"{label}.create() returned {type(policy).__name__}, not {label}"
    if params:
        _create(policy_cls, params)


def _no_default(fld: Any) -> bool:
    return fld.load_default is None or repr(fld.load_default) == "<marshmallow.missing>"


def check_unknown_parameter_rejected(policy_cls: type[Policy], params: ParamsArg = None) -> None:
    """An unknown parameter is refused with PolicyParameterError naming it."""
    bogus = "no_such_parameter_for_contract_test"
    try:
        policy_cls.create({**dict(params or {}), bogus: 1})
    except PolicyParameterError as exc:
        assert bogus in json.dumps(exc.messages, default=str), (
            f"{policy_cls.__name__}: the PolicyParameterError for an unknown parameter does not name it: {exc.messages!r}")
        return
    except Exception as exc:
        raise AssertionError(f"{policy_cls.__name__}.create() with an unknown parameter raised {type(exc).__name__}: "
                             f"{exc}; it must raise PolicyParameterError (leave the check to Params)") from exc
    raise AssertionError(f"{policy_cls.__name__}.create() accepted the unknown parameter {bogus!r}; it must raise "
                         "PolicyParameterError (a typo in a parameter name would otherwise be silently ignored)")


def check_parameter_schema(policy_cls: type[Policy], params: ParamsArg = None) -> None:
    """parameter_schema() is JSON, describes every field, and its defaults load back."""
    label = policy_cls.__name__
    described = policy_cls.parameter_schema()
    assert isinstance(described, dict), f"{label}.parameter_schema() must return a dict, got {type(described).__name__}"
    try:
        json.dumps(described, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{label}.parameter_schema() is not JSON-serializable: {exc}") from exc
    fields_ = set(policy_cls.Params().fields)
    assert set(described) == fields_, (
        f"{label}.parameter_schema() describes {sorted(described)} but Params has {sorted(fields_)}")
    defaults = {name: entry["default"] for name, entry in described.items() if "default" in entry}
    try:
        policy_cls.create(json.loads(json.dumps(defaults)))
    except Exception as exc:
        raise AssertionError(f"{label}: its own defaults, as listed (JSON), do not load: {exc}") from exc


def check_trust(policy_cls: type[Policy], params: ParamsArg = None) -> None:
    """Guest reports reach the policy if and only if it trusts the guest (checked in every view)."""
    run = _run_builtin(policy_cls, params, "memory_pressure")   # the watch fails on a report shown to a non-trusting policy
    if policy_cls.trusts_guest:
        assert run.guest_reports_seen > 0, (
            f"policy {policy_cls.name!r} trusts the guest but its views carried no guest report: an engine bug")


def check_deterministic(policy_cls: type[Policy], params: ParamsArg = None) -> None:
    """Two runs with the same seed give the same summary, series and events."""
    for name in ("memory_pressure", "stop_restart"):
        first = _run_builtin(policy_cls, params, name).result
        second = _run_builtin(policy_cls, params, name).result
        for part in ("summary", "series", "events"):
            a, b = getattr(first, part), getattr(second, part)
            assert a == b, (f"policy {policy_cls.name!r}, scenario {name!r}: two runs with the same seed differ in "
                            f"their {part}{_first_difference(a, b)}. A policy must be a pure function of its "
                            "parameters and what it is shown (seed any randomness from a constant or a parameter)")


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f" (first at {path or 'top'}: {a!r:.80} vs {b!r:.80})"


def check_select_victims(policy_cls: type[Policy], params: ParamsArg = None) -> None:
    """select_victims() answers a batch: at most ``count`` distinct frames among the candidates."""
    run = _run_builtin(policy_cls, params, "memory_pressure")
    view = run.last_view
    assert view is not None, f"policy {policy_cls.name!r}: on_epoch() was never called"
    vm = (view.running or view.vms)[0]
    policy = _create(policy_cls, params)
    label = f"policy {policy_cls.name!r}: select_victims()"
    for count in (0, 1, 16, 500):
        candidates = np.arange(3, 3 + 3 * 200, 3, dtype=np.int64)
        try:
            chosen = policy.select_victims(view, vm, candidates.copy(), count)
        except Exception as exc:
            raise AssertionError(f"{label} raised {type(exc).__name__}: {exc} (count={count})") from exc
        try:
            chosen = np.asarray(chosen, dtype=np.int64).ravel()
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{label} must return an array of frame numbers, got {chosen!r:.100}") from exc
        assert len(chosen) <= count, f"{label} returned {len(chosen)} frames for count={count}"
        assert len(np.unique(chosen)) == len(chosen), f"{label} returned a frame twice (count={count})"
        assert np.isin(chosen, candidates).all(), f"{label} returned frames that are not candidates (count={count})"


def _scenario_check(name: str) -> Callable[[type[Policy], ParamsArg], None]:
    def check(policy_cls: type[Policy], params: ParamsArg = None) -> None:
        _run_builtin(policy_cls, params, name)
    check.__name__ = f"check_runs_{name}"
    check.__doc__ = f"Runs the {name!r} scenario: {SCENARIOS[name].description}"
    return check


class ContractCheck(NamedTuple):
    name: str
    check: Callable[[type[Policy], ParamsArg], None]


#: Every check, in a useful order: cheap class checks first, runs after.
CONTRACT_CHECKS: tuple[ContractCheck, ...] = (
    ContractCheck("identity", check_identity),
    ContractCheck("parameters_have_defaults", check_parameters_have_defaults),
    ContractCheck("unknown_parameter_rejected", check_unknown_parameter_rejected),
    ContractCheck("parameter_schema", check_parameter_schema),
    *(ContractCheck(f"runs_{name}", _scenario_check(name)) for name in SCENARIOS),
    ContractCheck("trust", check_trust),
    ContractCheck("deterministic", check_deterministic),
    ContractCheck("select_victims", check_select_victims),
)


@dataclass(frozen=True)
class ContractCase:
    """One check bound to one policy: call it to run the check."""

    policy_cls: type[Policy]
    check: ContractCheck
    params: Optional[dict[str, Any]] = None

    @property
    def id(self) -> str:
        return f"{getattr(self.policy_cls, 'name', '') or self.policy_cls.__name__}-{self.check.name}"

    def __call__(self) -> None:
        self.check.check(self.policy_cls, self.params)


def contract_test_cases(policy_cls: type[Policy], params: ParamsArg = None) -> list[Any]:
    """One case per check, for ``pytest.mark.parametrize("case", ...)``; each is called with no
    arguments. Under pytest the cases carry readable ids (``fair-balloon-deterministic``)."""
    cases = [ContractCase(policy_cls, c, dict(params) if params else None) for c in CONTRACT_CHECKS]
    try:
        import pytest
    except ImportError:   # the kit itself does not need pytest
        return cases
    return [pytest.param(case, id=case.id) for case in cases]


def check_policy(policy_cls: type[Policy], params: ParamsArg = None) -> None:
    """Run every check; raise one AssertionError listing each one that failed."""
    failures = []
    for name, check in CONTRACT_CHECKS:
        try:
            check(policy_cls, params)
        except AssertionError as exc:
            failures.append(f"- {name}: {exc}")
        if name == "identity" and failures:
            break   # not a policy at all: the other checks would only repeat it
    if failures:
        who = getattr(policy_cls, "name", None) or getattr(policy_cls, "__name__", repr(policy_cls))
        raise AssertionError(f"policy {who!r} breaks the contract in {len(failures)} of {len(CONTRACT_CHECKS)} "
                             "checks:\n" + "\n".join(failures))


__all__ = [
    "CONTRACT_CHECKS", "CheckedRun", "ContractCase", "ContractCheck", "ContractViolation", "HOOK_SECONDS", "RUN_SECONDS", "SCENARIOS",
    "check_deterministic", "check_identity", "check_parameter_schema", "check_parameters_have_defaults",
    "check_policy", "check_select_victims", "check_trust", "check_unknown_parameter_rejected",
    "contract_test_cases", "load_scenario", "policy_hooks", "run_checked",
]
