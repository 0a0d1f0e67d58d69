"""Every installed policy keeps the plugin contract, checked by the same kit third parties use
(service.sdk.testing). The list comes from the entry-point group, so a policy added later, built-in
or installed from elsewhere, is covered without touching this file. Then: the kit does catch
policies that break the contract."""
from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np
import pytest
from marshmallow import EXCLUDE, INCLUDE, Schema, fields, validate

from service.policies import GROUP, installed_policies, load_policy
from service.sdk import Admission, Decisions, Policy, VMDecision
from service.sdk.testing import (
    CONTRACT_CHECKS, SCENARIOS, check_deterministic, check_identity, check_parameter_schema,
    check_parameters_have_defaults, check_policy, check_select_victims, check_trust,
    check_unknown_parameter_rejected, contract_test_cases, policy_hooks, run_checked,
)

# Names only: loading happens inside each test, so one broken plugin fails its own tests rather
# than the collection of the whole file.
INSTALLED = sorted({ep.name for ep in entry_points(group=GROUP)})


def test_the_builtin_baseline_is_installed():
    assert "static" in INSTALLED
    assert [p.name for p in installed_policies()] == INSTALLED


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=[c.name for c in CONTRACT_CHECKS])
@pytest.mark.parametrize("policy", INSTALLED)
def test_installed_policy_keeps_the_contract(policy, check):
    check.check(load_policy(policy), None)


# --- the kit's own API ----------------------------------------------------------------------

def test_hooks_are_the_public_methods_of_policy():
    assert policy_hooks() == ("setup", "admit", "on_stop", "on_epoch", "update_params", "select_victims")


def test_contract_test_cases_have_readable_ids_and_run():
    from plugins.static import StaticPolicy
    cases = contract_test_cases(StaticPolicy)
    assert [c.id for c in cases] == [f"static-{c.name}" for c in CONTRACT_CHECKS]
    cases[0].values[0]()


def test_the_scenarios_exercise_every_lifecycle_hook():
    class Counting(Policy):
        name = "counting"
        version = "1"

    runs = {name: run_checked(Counting(), sc) for name, sc in SCENARIOS.items()}
    assert runs["stop_restart"].calls.get("on_stop", 0) >= 1
    assert runs["stop_restart"].restarts_admitted >= 1
    assert runs["cold_start"].calls["admit"] == 2 and runs["cold_start"].calls["setup"] == 1
    over = runs["memory_pressure"].result.summary
    assert sum(v["peak_assigned_mb"] for v in over["vms"]) > over["host"]["memory_mb"] - 8
    assert next(v for v in runs["idle_vm"].result.summary["vms"] if v["name"] == "idle")["refs_done"] < 10_000


# --- the kit catches broken policies ---------------------------------------------------------

class Good(Policy):
    name = "good"
    version = "1.0"

    class Params(Schema):
        level = fields.Integer(load_default=3)

    def __init__(self, level: int = 3):
        super().__init__(level=level)


def fails(check, cls, *words):
    with pytest.raises(AssertionError) as err:
        check(cls, None)
    for word in words:
        assert word in str(err.value), str(err.value)
    return str(err.value)


def test_a_good_policy_passes():
    check_policy(Good)


def test_identity_needs_a_name_and_an_own_version():
    class Unversioned(Policy):
        name = "unversioned"

    class Dotted(Good):
        name = "my.policy"

    class Nameless(Good):
        name = ""

    fails(check_identity, Unversioned, "own version")
    fails(check_identity, Dotted, "--param")
    fails(check_identity, Nameless, "non-empty")
    fails(check_identity, dict, "not a subclass")


def test_parameters_need_defaults_and_unknown_ones_are_refused():
    class NoDefault(Good):
        class Params(Schema):
            level = fields.Integer()

    class Permissive(Good):
        class Params(Schema):
            class Meta:
                unknown = EXCLUDE
            level = fields.Integer(load_default=3)

    class Swallowing(Good):
        class Params(Schema):
            class Meta:
                unknown = INCLUDE
            level = fields.Integer(load_default=3)

        def __init__(self, **params):
            Policy.__init__(self, **params)

    class Strict(Good):       # unknown keys reach __init__, which refuses them the wrong way
        class Params(Schema):
            class Meta:
                unknown = INCLUDE
            level = fields.Integer(load_default=3)

    fails(check_parameters_have_defaults, NoDefault, "level")
    fails(check_unknown_parameter_rejected, Permissive, "accepted the unknown parameter")
    fails(check_unknown_parameter_rejected, Swallowing, "accepted the unknown parameter")
    fails(check_unknown_parameter_rejected, Strict, "raised TypeError", "PolicyParameterError")


def test_parameter_schema_must_be_json_and_its_defaults_must_load():
    class BadDefault(Good):
        class Params(Schema):
            level = fields.Integer(load_default=-1, validate=validate.Range(min=0))

    class NotJson(Good):
        @classmethod
        def parameter_schema(cls):
            return {"level": {"type": "integer", "default": {1, 2}}}

    fails(check_parameter_schema, BadDefault, "do not load")
    fails(check_parameter_schema, NotJson, "not JSON")


def test_wrong_return_types_are_named():
    class DictDecisions(Good):
        def on_epoch(self, host):
            return {"vms": {}}

    class BoolAdmission(Good):
        def admit(self, host, vm, restart):
            return True

    class StrayVM(Good):
        def on_epoch(self, host):
            return Decisions(vms={"nobody": VMDecision()})

    class TalkativeStop(Good):
        def on_stop(self, host, vm):
            return Decisions()

    runs = dict(CONTRACT_CHECKS)
    fails(runs["runs_cold_start"], DictDecisions, "on_epoch() must return Decisions", "dict")
    fails(runs["runs_cold_start"], BoolAdmission, "admit() must return an Admission")
    fails(runs["runs_cold_start"], StrayVM, "'nobody'")
    fails(runs["runs_stop_restart"], TalkativeStop, "on_stop() must return None")


def test_a_decision_the_engine_refuses_fails_with_the_engines_reason():
    class BalloonsEveryone(Good):
        def on_epoch(self, host):
            d = Decisions()
            for vm in host.running:
                d.vm(vm.name).balloon_mb = 8
            return d

    message = fails(dict(CONTRACT_CHECKS)["runs_no_balloon_driver"], BalloonsEveryone, "no balloon driver", "legacy")
    assert "the engine refused a decision" in message
    dict(CONTRACT_CHECKS)["runs_memory_pressure"](BalloonsEveryone, None)   # fine where every VM has a driver


def test_a_hook_that_raises_is_named():
    class Crashes(Good):
        def setup(self, host):
            raise ZeroDivisionError("oops")

    class Asserts(Good):
        def admit(self, host, vm, restart):
            assert vm.name == "busy", "only busy VMs"
            return Admission(admit=True)

    fails(dict(CONTRACT_CHECKS)["runs_idle_vm"], Crashes, "setup() raised ZeroDivisionError: oops")
    fails(dict(CONTRACT_CHECKS)["runs_idle_vm"], Asserts, "policy 'good'", "admit() in epoch 0",
          "admit() raised AssertionError: only busy VMs")


def test_nondeterminism_is_caught():
    class Coin(Good):
        def __init__(self, **params):
            super().__init__(**params)
            self.rng = np.random.default_rng()          # unseeded

        def on_epoch(self, host):
            d = Decisions()
            for vm in host.running:
                d.vm(vm.name).balloon_mb = float(self.rng.integers(0, 16))
            return d

    fails(check_deterministic, Coin, "differ", "same seed")


def test_trust_is_declared_on_the_class():
    class Sneaky(Good):
        def __init__(self, **params):
            super().__init__(**params)
            self.trusts_guest = True                    # the registry would list it as not trusting

    fails(check_trust, Sneaky, "trusts_guest")
    check_trust(type("Trusting", (Good,), {"trusts_guest": True, "name": "trusting"}), None)


def test_select_victims_must_answer_a_batch_from_the_candidates():
    class Greedy(Good):
        def select_victims(self, host, vm, candidates, count):
            return np.concatenate([candidates, candidates])[:count + 1]

    class Invents(Good):
        def select_victims(self, host, vm, candidates, count):
            return np.arange(count) * 3 + 1

    fails(check_select_victims, Greedy, "frames for count=")
    fails(check_select_victims, Invents, "not candidates")


def test_a_slow_hook_is_caught(monkeypatch):
    import service.sdk.testing as kit
    monkeypatch.setattr(kit, "HOOK_SECONDS", 0.0)
    fails(dict(CONTRACT_CHECKS)["runs_idle_vm"], Good, "hooks took")


def test_check_policy_lists_every_failed_check():
    class Bad(Good):
        def admit(self, host, vm, restart):
            return Admission(admit=True, assigned_mb=10_000)

    with pytest.raises(AssertionError) as err:
        check_policy(Bad)
    text = str(err.value)
    assert "breaks the contract" in text and "- runs_cold_start:" in text and "- runs_idle_vm:" in text
    assert "- identity:" not in text
