"""docs/traces.md cannot drift: its example scenario runs offline with ``vmemlab simulate`` on a
recorded trace from tests/data (two VMs, three policies), and every ``vmemlab`` command it shows
parses with today's command line. Its service variant (the page's ``sed`` line) is checked against
the API in tests/api/test_trace_analysis.py."""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from service.cli import build_parser, main

from .conftest import DATA, ROOT

DOC = ROOT / "docs" / "traces.md"
EXAMPLE = ROOT / "examples" / "traces" / "sort-two-vms.json"


@pytest.fixture
def beside_a_trace(tmp_path: Path) -> Path:
    """The example scenario beside a recorded sort trace named as the page names it."""
    shutil.copy(EXAMPLE, tmp_path / EXAMPLE.name)
    shutil.copy(DATA / "lackey_sort.txt.gz", tmp_path / "sort.txt")     # gzip is read by its magic
    return tmp_path / EXAMPLE.name


def test_the_example_runs_two_vms_under_three_policies(beside_a_trace, capsys):
    assert main(["simulate", str(beside_a_trace), "--json", "--quiet"]) == 0
    runs = {run["policy"]: {vm["name"]: vm for vm in run["vms"]} for run in json.loads(capsys.readouterr().out)}
    assert sorted(runs) == ["dynamic-memory", "overcommit", "static"]
    trace_refs = 16_649_205
    assert runs["static"]["small"]["state"] == "refused"
    assert runs["static"]["big"]["refs_done"] == 2 * trace_refs         # trace_loops 2, no stall to speak of
    for policy in ("overcommit", "dynamic-memory"):
        big, small = runs[policy]["big"], runs[policy]["small"]
        assert big["state"] == small["state"] == "ran"
        assert big["slowdown"] < 1.1 < small["slowdown"]                  # the small VM pages, the big one not
        assert small["faults"]["guest_pagefile_read"] > 0
    assert runs["overcommit"]["small"]["faults"]["host_swap_in"] > 0
    assert runs["dynamic-memory"]["small"]["faults"]["host_swap_in"] == 0  # Dynamic Memory never host-pages


def _commands() -> list[list[str]]:
    """Every ``vmemlab ...`` line of the page's code blocks, as arguments (comments dropped)."""
    found = []
    for block in re.findall(r"```(?:sh)?\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        for line in block.splitlines():
            if line.startswith("vmemlab "):
                found.append(shlex.split(line, comments=True)[1:])
    return found


def test_every_command_in_the_page_parses():
    commands = _commands()
    assert {c[0] + " " + c[1] for c in commands if c[0] == "trace"} >= {"trace record", "trace info", "trace import"}
    assert any(c[0] == "simulate" for c in commands) and any(c[0] == "submit" for c in commands)
    parser = build_parser()
    for args in commands:
        parsed = parser.parse_args(args)
        assert callable(parsed.run), args


def test_the_page_names_files_that_exist():
    text = DOC.read_text(encoding="utf-8")
    for name in re.findall(r"`((?:examples|tests|service|docs)/[\w./-]+)`", text):
        assert (ROOT / name).exists(), name
