"""``vmemlab plugins new NAME``: a new policy distribution laid out like
``examples/third-party-policy``: a pyproject with the entry point, a policy with a parameter
schema, contract tests that pass as generated, and a README. What datasette's and pytest's plugin
templates do for their ecosystems, without a template engine: the files are plain strings."""
from __future__ import annotations

import re
from pathlib import Path

from ..sdk.policy import NAME_PATTERN
from .common import UsageError

PYPROJECT = '''[build-system]
requires = ["setuptools>=64", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "{name}: a memory policy for vmemlab"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["vmemlab>=0.1"]

# The one line that makes the policy visible to vmemlab: an entry point in the group
# vmemlab.policies, named as the policy is named (Policy.name).
[project.entry-points."vmemlab.policies"]
{name} = "{module}:{cls}"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

POLICY = '''"""``{name}``: a vmemlab memory policy.

Start from here: ``on_epoch`` sees the host once per epoch and returns decisions. This one
balloons every VM with a balloon driver down to ``keep_pct`` of its memory while host free memory
is below ``free_threshold_pct``, and gives the memory back when it is above. See docs/plugins.md of
vmemlab for every view field and decision.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.sdk import Decisions, HostDecision, HostView, Policy


class {cls}(Policy):
    name = "{name}"
    version = "0.1.0"
    trusts_guest = False          # True only if the policy reads guest reports (VMView.guest)
    summary = "balloons VMs to a share of their memory while host memory is short"

    class Params(Schema):
        free_threshold_pct = fields.Float(
            load_default=10.0, validate=validate.Range(min=0.0, max=100.0),
            metadata={{"description": "host free memory below which VMs are ballooned, % of host memory"}})
        keep_pct = fields.Float(
            load_default=60.0, validate=validate.Range(min=1.0, max=100.0),
            metadata={{"description": "what a ballooned VM keeps, % of its memory"}})

    def on_epoch(self, host: HostView) -> Decisions:
        p = self.params                          # read each epoch: a scenario event may change them
        short = host.free_mb < host.memory_mb * p["free_threshold_pct"] / 100.0
        decisions = Decisions(host=HostDecision(state="short" if short else "plenty"))
        for vm in host.running:
            if not vm.balloon_driver:
                continue
            keep = vm.present_mb * p["keep_pct"] / 100.0
            decisions.vm(vm.name).balloon_mb = max(vm.present_mb - keep, 0.0) if short else 0.0
        return decisions
'''

TESTS = '''"""{name} keeps the vmemlab policy contract: one test per check of the kit."""
import pytest

from service.sdk.testing import SCENARIOS, check_policy, contract_test_cases, run_checked
from {module} import {cls}


@pytest.mark.parametrize("case", contract_test_cases({cls}))
def test_contract(case):
    case()


def test_whole_contract_in_one_call():
    check_policy({cls}, {{"free_threshold_pct": 50, "keep_pct": 30}})


def test_it_balloons_under_pressure():
    run = run_checked({cls}.create({{"free_threshold_pct": 50}}), SCENARIOS["memory_pressure"])
    assert any(max(vm["ballooned_mb"]) > 0 for vm in run.result.series["vms"].values())
'''

README = '''# {dist}

`{name}`: a memory policy for [vmemlab](https://example.invalid/vmemlab), made by
`vmemlab plugins new {name}`.

```sh
pip install -e .                  # into the environment vmemlab runs in
python -m pytest                  # the contract tests
vmemlab plugins                   # lists {name}
vmemlab simulate SCENARIO.json --policy {name}
```

On a running service an admin registers it before experiments may use it:
`POST /api/v1/plugins {{"name": "{name}"}}` with an admin token. Bump `version` in
`src/{module}/__init__.py` whenever its behaviour changes: runs record it, and a new version needs
approving again.
'''


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name) if part) + "Policy"


def new_distribution(name: str, parent: Path) -> Path:
    """Write the distribution ``vmemlab-NAME`` into ``parent``; its folder."""
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"plugin name {name!r}: use letters, digits, '-' and '_' (it is the entry-point name and "
                         "the NAME in --param NAME.key=value)")
    dist = f"vmemlab-{name}"
    module = "vmemlab_" + name.replace("-", "_").lower()
    if not module.isidentifier():
        raise UsageError(f"plugin name {name!r} does not make a Python module name ({module})")
    folder = parent / dist
    if folder.exists():
        raise UsageError(f"{folder} exists already: choose another name or folder (--dir)")
    values = {"name": name, "dist": dist, "module": module, "cls": class_name(name)}
    files = {
        folder / "pyproject.toml": PYPROJECT, folder / "README.md": README,
        folder / "src" / module / "__init__.py": POLICY, folder / "tests" / "test_contract.py": TESTS,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return folder
