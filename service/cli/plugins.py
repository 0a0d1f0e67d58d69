"""``vmemlab plugins``: the installed policies and their parameters."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence, TextIO

from ..policies import broken_policies, installed_policies
from .common import Column, format_table
from .scaffold import new_distribution


def command_plugins(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    infos = installed_policies()
    broken = broken_policies()
    if args.json:
        out.write(json.dumps([dataclasses.asdict(info) for info in infos]
                             + [{**dataclasses.asdict(b), "broken": True} for b in broken], indent=2) + "\n")
    else:
        out.write(format_plugins(infos))
    for b in broken:
        err.write(f"warning: {b.error}\n")
    return 0


PARAM_COLUMNS = (
    Column("", "parameter", "<", lambda name, p: name),
    Column("", "type", "<", lambda name, p: str(p.get("type", ""))),
    Column("", "default", "<", lambda name, p: json.dumps(p["default"]) if "default" in p else "-"),
    Column("", "range", "<", lambda name, p: _param_range(p)),
)


def format_plugins(infos: Sequence[Any]) -> str:
    if not infos:
        return "no policies installed (entry point group vmemlab.policies)\n"
    lines = []
    for info in infos:
        dist = f"{info.distribution} {info.distribution_version}".strip() or "unknown distribution"
        lines.append(f"{info.name} {info.version}  ({dist}; trusts the guest: {'yes' if info.trusts_guest else 'no'})")
        if info.summary:
            lines.append(f"  {info.summary}")
        if info.parameters:
            rows = [[c.cell(name, p) for c in PARAM_COLUMNS] for name, p in info.parameters.items()]
            lines += ["  " + row for row in format_table(PARAM_COLUMNS, rows)]
        else:
            lines.append("  no parameters")
        lines.append("")
    return "\n".join(lines)


def _param_range(param: dict) -> str:
    if "choices" in param:
        return " | ".join(str(c) for c in param["choices"])
    low, high = param.get("min"), param.get("max")
    if low is None and high is None:
        return "-"
    return f"{'' if low is None else low}..{'' if high is None else high}"


def command_plugins_new(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    folder = new_distribution(args.name, Path(args.dir))
    out.write(f"created {folder}: the policy in src/, contract tests in tests/\n"
              f"next:  pip install -e {folder} && (cd {folder} && python -m pytest)\n")
    return 0
