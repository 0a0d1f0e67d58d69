"""A third-party policy, installed as its own distribution, is found, listed and run exactly as
a user's would be: through its entry point in the group ``vmemlab.policies``, nothing imported by
name. The package is examples/third-party-policy (docs/plugins.md walks through it)."""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.metadata
import importlib.util
import json
import site
import subprocess
import sys
from pathlib import Path

import pytest

from service import cli
from service.policies import GROUP, installed_policies, load_policy
from service.sdk import Policy
from service.sdk.testing import SCENARIOS, check_policy, run_checked

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "third-party-policy"
DISTRIBUTION = "vmemlab-example-policy"
MODULE = "vmemlab_example_policy"
POLICY = "fair-balloon"


def _installed_here() -> bool:
    """Installed, and from this checkout (not a stale install of another one)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    direct = dist.read_text("direct_url.json")
    if not direct:
        return False
    return json.loads(direct).get("url", "").rstrip("/") == EXAMPLE.as_uri()


def _pip_install() -> None:
    # Without build isolation pip needs nothing from a package index; setuptools' editable
    # builds need the `wheel` package until setuptools 70.1, so fall back to an isolated build
    # (which fetches setuptools and wheel) when it is missing.
    offline = importlib.util.find_spec("wheel") is not None or _setuptools_at_least(70, 1)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(EXAMPLE)]
    if offline:
        cmd[-2:-2] = ["--no-build-isolation", "--no-index"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"


def _setuptools_at_least(*version: int) -> bool:
    try:
        text = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    parts = tuple(int(p) for p in text.split(".")[:len(version)] if p.isdigit())
    return parts >= version


def _activate_new_pth_files() -> None:
    """This interpreter read the .pth files at start: read the example's editable one now."""
    for directory in site.getsitepackages():
        for pth in sorted(Path(directory).glob(f"__editable__*{MODULE}*.pth")):
            site.addpackage(directory, pth.name, set())
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def example_installed():
    lock = Path(sys.prefix) / ".vmemlab-example-install.lock"
    with open(lock, "w") as handle, contextlib.ExitStack() as stack:
        fcntl.flock(handle, fcntl.LOCK_EX)       # two test runs at once must not both pip-install
        stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        if not _installed_here():
            _pip_install()
    _activate_new_pth_files()
    assert _installed_here(), f"{DISTRIBUTION} is not installed from {EXAMPLE}"


def test_the_policy_loads_through_its_entry_point(example_installed):
    cls = load_policy(POLICY)
    assert issubclass(cls, Policy) and cls.name == POLICY
    assert cls.__module__ == MODULE
    assert Path(sys.modules[MODULE].__file__).resolve().is_relative_to(EXAMPLE), "imported from elsewhere"
    entry = next(ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == POLICY)
    assert entry.value == f"{MODULE}:FairBalloonPolicy"


def test_it_is_listed_with_its_distribution_and_version(example_installed):
    info = next((p for p in installed_policies() if p.name == POLICY), None)
    assert info is not None, f"{POLICY} missing from {[p.name for p in installed_policies()]}"
    assert info.distribution == DISTRIBUTION
    assert info.distribution_version == importlib.metadata.version(DISTRIBUTION) == "0.1.0"
    assert info.version == load_policy(POLICY).version == "0.1.0"
    assert info.trusts_guest is True
    assert info.parameters["free_threshold_pct"] == {
        "type": "float", "default": 10.0, "min": 1, "max": 50,
        "description": "host free memory, in % of host memory, below which VMs are ballooned"}
    assert info.parameters["floor_mb"]["default"] == 256


def test_it_keeps_the_contract(example_installed):
    cls = load_policy(POLICY)
    check_policy(cls)
    check_policy(cls, {"floor_mb": 32})


def test_it_balloons_under_pressure(example_installed):
    run = run_checked(load_policy(POLICY).create({"floor_mb": 32}), SCENARIOS["memory_pressure"])
    assert all(vm["ballooned_peak_mb"] > 0 for vm in run.result.summary["vms"])


def test_vmemlab_plugins_lists_it(example_installed, capsys):
    assert cli.main(["plugins", "--json"]) == 0
    listing = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert POLICY in listing and "static" in listing
    entry = listing[POLICY]
    assert entry["distribution"] == DISTRIBUTION and entry["distribution_version"] == "0.1.0"
    assert entry["entry_point"] == f"{MODULE}:FairBalloonPolicy"
    assert set(entry["parameters"]) == {"free_threshold_pct", "floor_mb"}

    assert cli.main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert f"{POLICY} 0.1.0  ({DISTRIBUTION} 0.1.0; trusts the guest: yes)" in text


def test_vmemlab_simulate_runs_it_with_a_parameter(example_installed, tmp_path, capsys):
    scenario = {
        "name": "tiny", "duration_s": 1, "epoch_s": 0.25, "seed": 1,
        "host": {"memory_mb": 192, "vm_overhead_mb": 4},
        "vms": [{"name": n, "memory_mb": 128, "os_mb": 16,
                 "workload": {"phases": [{"kind": "zipf", "footprint_mb": 100, "duration_s": 10}]}}
                for n in ("a", "b")],
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(scenario))
    code = cli.main(["simulate", str(path), "--policy", POLICY, "--param", f"{POLICY}.floor_mb=32", "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (summary,) = json.loads(out)
    assert summary["policy"] == POLICY and summary["policy_version"] == "0.1.0"
    assert all(vm["ballooned_peak_mb"] > 0 for vm in summary["vms"])

    code = cli.main(["simulate", str(path), "--policy", POLICY, "--param", f"{POLICY}.floor_mb=-5", "--quiet"])
    assert code == 2
    assert "floor_mb" in capsys.readouterr().err
