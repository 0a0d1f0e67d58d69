"""Plugins are someone else's code (issue 10): a plugin that flips its trust level, raises or hangs
in its constructor, raises or answers nonsense in a hook, or changes another plugin at import fails
its own run (or request) with its name in the message, the other policies run on, and no guest
report ever reaches a policy that does not trust the guest.

The hostile policies (tests/hostile_plugins.py) are installed the way a distribution is: a module
and a dist-info advertising them in ``vmemlab.policies``, on sys.path. The service-side checks
(registration, 422s, a real worker) are in tests/api/test_plugins.py and tests/service."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from service import policies
from service.cli import main
from service.engine import PolicyError, simulate
from service.policies import BrokenPolicyError, load_policy
from service.scenario import load_scenario

from .conftest import HOSTILE_MODULE as MODULE


def scenario_file(tmp_path: Path) -> str:
    """Two VMs, one of them with a balloon driver reporting to the guest-trusting policies."""
    doc = {"name": "tiny", "duration_s": 3, "seed": 1, "host": {"memory_mb": 512},
           "vms": [{"name": "a", "memory_mb": 256, "os_mb": 16,
                    "workload": {"phases": [{"kind": "uniform", "footprint_mb": 200, "duration_s": 3}]}},
                   {"name": "b", "memory_mb": 256, "os_mb": 16,
                    "workload": {"phases": [{"kind": "uniform", "footprint_mb": 200, "duration_s": 3}]}}]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(doc))
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, list, str]:
    code = main(["simulate", *argv, "--json", "--quiet"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else [], err


def guest_seen() -> dict:
    return sys.modules[MODULE].GUEST_SEEN


@pytest.mark.parametrize("name,hook", [("hostile-class-trust", "setup()"), ("hostile-instance-trust", "on_epoch()"),
                                       ("hostile-ctor-trust", "the policy's constructor")])
def test_a_trust_flip_fails_its_run_and_no_guest_report_reaches_it(hostile, tmp_path, capsys, name, hook):
    code, summaries, err = run_cli(capsys, scenario_file(tmp_path), "--policy", "static", "--policy", name,
                                   "--policy", "kvm")
    assert code == 1
    by_policy = {s["policy"]: s for s in summaries}
    failed = by_policy[name]["error"]
    assert f"policy {name!r}" in failed and f"{hook} changed trusts_guest" in failed and "fixed when it is loaded" in failed
    assert f"error: {failed}" in err
    assert "error" not in by_policy["static"] and "error" not in by_policy["kvm"]     # the others ran
    assert guest_seen() == {}
    assert load_policy(name).trusts_guest is False       # put back for the next run in this process


def test_the_trust_level_comes_from_the_registry_not_the_class(hostile):
    """A worker passes the trust level the registry approved: a class that says otherwise fails."""
    sc, _ = load_scenario(json.loads(Path(scenario_file(Path(hostile))).read_text()))
    kvm = load_policy("kvm")
    with pytest.raises(PolicyError, match="'kvm'.*fixed when it is loaded \\(here False\\)"):
        simulate(sc, kvm.create({}), trusts_guest=False)
    assert kvm.trusts_guest is True          # found before the run: the class is left as it is


@pytest.mark.parametrize("name,words", [
    ("hostile-ctor-raises", "policy 'hostile-ctor-raises' 1.0 raised ValueError: the constructor refuses"),
    ("hostile-hook-raises", "policy 'hostile-hook-raises' 1.0 raised KeyError: 'a hook bug (hostile test)'"),
    ("hostile-hook-nonsense", "policy 'hostile-hook-nonsense': on_epoch() must return Decisions, got list"),
])
def test_a_raising_or_nonsensical_plugin_fails_its_row_and_the_others_run(hostile, tmp_path, capsys, name, words):
    code, summaries, err = run_cli(capsys, scenario_file(tmp_path), "--policy", "static", "--policy", name,
                                   "--policy", "esx")
    assert code == 1
    assert [s["policy"] for s in summaries] == ["static", name, "esx"]
    assert words in summaries[1]["error"] and "Traceback" not in err
    assert summaries[0]["vms"] and summaries[2]["vms"]
    code = main(["simulate", scenario_file(tmp_path), "--policy", name, "--policy", "static", "--quiet"])
    out, _ = capsys.readouterr()
    assert code == 1 and f"{name}: failed: " in out and "static" in out


def test_a_plugin_that_changes_another_at_import_is_broken_and_changes_nothing(hostile, tmp_path, capsys):
    esx = load_policy("esx")
    with pytest.raises(BrokenPolicyError, match="importing it changed trusts_guest of plugins.esx.EsxPolicy"):
        load_policy("hostile-import")
    assert esx.trusts_guest is False
    with pytest.raises(BrokenPolicyError, match="hostile-import"):     # and stays refused
        load_policy("hostile-import")
    assert "hostile-import" in {b.name for b in policies.broken_policies()}
    assert "hostile-import" not in {p.name for p in policies.installed_policies()}
    assert main(["simulate", scenario_file(tmp_path), "--policy", "hostile-import", "--quiet"]) == 2
    assert "importing it changed trusts_guest" in capsys.readouterr().err
    code, summaries, _ = run_cli(capsys, scenario_file(tmp_path), "--policy", "esx")
    assert code == 0 and summaries[0]["policy"] == "esx"
