"""docs/plugins.md documents the whole plugin contract: every hook under its own heading, every
field of every view and decision in its class's section, every check of the contract kit; and
its code excerpts are still what the example package's files say."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from service import sdk
from service.engine.state import FAULT_NAMES
from service.sdk import (
    Admission, Decisions, GuestReport, HostDecision, HostView, MemorySettings, Policy, VMDecision, VMView,
)
from service.sdk.testing import CONTRACT_CHECKS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
TEXT = DOC.read_text(encoding="utf-8")

# Class methods every policy inherits and does not override: documented, but not hooks.
NOT_HOOKS = {"create", "load_params", "parameter_schema"}
HOOKS = [name for name, member in vars(Policy).items()
         if not name.startswith("_") and inspect.isfunction(member) and name not in NOT_HOOKS]
DOCUMENTED_CLASSES = [HostView, VMView, GuestReport, MemorySettings, Admission, VMDecision, HostDecision, Decisions]


def _blocks(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Lines outside code fences, and the fenced blocks as (comment line before it, body)."""
    prose, blocks = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            before = lines[i - 1] if i else ""
            blocks.append((before, "\n".join(lines[i + 1:j])))
            i = j + 1
            continue
        prose.append(lines[i])
        i += 1
    return prose, blocks


PROSE, BLOCKS = _blocks(TEXT)


def _identifiers(text: str) -> set[str]:
    """Every identifier inside a backtick span: `VMDecision.host_swap` gives both names."""
    return {word for span in re.findall(r"`([^`]+)`", text) for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}


def _sections() -> dict[str, str]:
    """Heading line -> the prose under it, up to the next heading of any level."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in PROSE:
        if line.startswith("#"):
            current = line
            out[current] = []
        else:
            out.setdefault(current, []).append(line)
    return {heading: "\n".join(body) for heading, body in out.items()}


SECTIONS = _sections()


def _section_of(cls: type) -> str:
    found = [body for heading, body in SECTIONS.items() if f"`{cls.__name__}`" in heading]
    assert found, f"docs/plugins.md has no heading naming `{cls.__name__}`"
    return "\n".join(found)


def test_hooks_are_discovered():
    assert {"setup", "admit", "on_stop", "on_epoch", "select_victims"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_its_own_heading(hook):
    headings = [h for h in SECTIONS if h.startswith("#") and re.search(rf"`{hook}\(", h)]
    assert headings, f"hook {hook}() of service.sdk.Policy is not documented: add a heading '### `{hook}(...)`' to docs/plugins.md"
    body = "\n".join(SECTIONS[h] for h in headings)
    assert "Default" in body, f"the section of {hook}() must say what the default does"


@pytest.mark.parametrize("cls", DOCUMENTED_CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_documented_in_its_class_section(cls):
    documented = _identifiers(_section_of(cls))
    names = [f.name for f in dataclasses.fields(cls)]
    # the public helpers beside the fields: properties and methods (HostView.running, VMView.visible_mb, ...)
    names += [n for n, m in vars(cls).items()
              if not n.startswith("_") and (isinstance(m, property) or inspect.isfunction(m))]
    missing = [n for n in names if n not in documented]
    assert not missing, f"{cls.__name__} fields not documented (in backticks) under its heading in docs/plugins.md: {missing}"


def test_the_policy_class_attributes_and_sdk_names_are_documented():
    documented = _identifiers("\n".join(PROSE))
    policy_attrs = ["name", "version", "trusts_guest", "summary", "Params", *NOT_HOOKS]
    missing = [n for n in policy_attrs + list(sdk.__all__) if n not in documented]
    assert not missing, f"not documented in docs/plugins.md: {missing}"


def test_every_fault_kind_is_documented():
    documented = _identifiers(_section_of(VMView))
    assert [k for k in FAULT_NAMES if k not in documented] == []


def test_every_contract_check_is_documented():
    documented = _identifiers("\n".join(PROSE))
    assert [c.name for c in CONTRACT_CHECKS if c.name not in documented] == []


EXCERPTS = [(m.group(1).strip(), body) for before, body in BLOCKS
            if (m := re.fullmatch(r"<!-- from: (.+) -->", before.strip()))]


def test_the_doc_takes_its_examples_from_the_example_package():
    assert len(EXCERPTS) >= 4
    assert all(path.startswith("examples/third-party-policy/") for path, _ in EXCERPTS)


@pytest.mark.parametrize("path,body", EXCERPTS, ids=[f"{p}:{i}" for i, (p, _) in enumerate(EXCERPTS)])
def test_excerpts_match_their_files(path, body):
    source = (ROOT / path).read_text(encoding="utf-8")
    assert body.strip("\n") in source, (
        f"docs/plugins.md quotes {path} but the file no longer contains this excerpt; copy it again:\n{body}")


def test_relative_links_point_at_files_that_exist():
    links = re.findall(r"\]\((?!https?:|#)([^)]+)\)", TEXT)
    assert links
    missing = [link for link in links if not (DOC.parent / link.split("#")[0]).exists()]
    assert not missing, f"docs/plugins.md links to missing files: {missing}"


def test_every_registry_status_and_setting_is_documented():
    """The registry's statuses and VMEMLAB_PLUGINS_AUTO_ENABLE's choices, in the plugin guide's
    registration section and in the API's plugin schema, as the code has them."""
    from service.api.schemas.plugins import PluginSchema
    from service.registry import AUTO_ENABLE, STATUSES

    section = "\n".join(body for heading, body in SECTIONS.items() if "Registering on a running service" in heading)
    documented = _identifiers(section)
    assert [s for s in STATUSES if s not in documented] == []
    assert [c for c in AUTO_ENABLE if c not in documented] == []
    assert "VMEMLAB_PLUGINS_AUTO_ENABLE" in documented
    described = PluginSchema().fields["status"].metadata["description"]
    assert [s for s in STATUSES if s not in described] == []
