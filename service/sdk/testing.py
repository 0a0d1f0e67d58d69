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

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np
from marshmallow import Schema

from .policy import NAME_PATTERN, Policy, PolicyParameterError
from .watch import (  # noqa: F401  (part of this module's API)
    SCENARIOS, CheckedRun, ContractViolation, load_scenario, policy_hooks, run_checked,
)

ParamsArg = Optional[Mapping[str, Any]]

#: Longest a run of one built-in scenario may take, wall clock, engine included.
RUN_SECONDS = 60.0
#: Longest a policy's hooks may take in total over one built-in scenario (8 epochs, 2-3 VMs).
HOOK_SECONDS = 5.0



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
