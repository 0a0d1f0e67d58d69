"""The ``vmemlab`` command line: simulate a scenario under one or more policies, compute miss
counts of a recorded trace, list installed policies.

User mistakes (a bad scenario, an unknown policy, a malformed trace, a missing file) are printed
as ``error: ...`` lines on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from typing import Any, Callable, Iterable, Sequence, TextIO

from .engine import ScenarioError, simulate
from .engine.config import REPLACEMENTS
from .engine.mrc import miss_counts
from .engine.traces import TraceError, load_trace, trace_stats
from .policies import BrokenPolicyError, UnknownPolicyError, installed_policies, load_policy
from .scenario import ScenarioValidationError, flatten_errors, load_scenario_file
from .sdk import Policy, PolicyParameterError

EXIT_USAGE = 2
DEFAULT_POLICY = "static"


class UsageError(Exception):
    """A mistake on the command line; each line is printed as one ``error:`` line."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


# --- simulate ------------------------------------------------------------------------------

def parse_param_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["esx.idle_tax=0.75", "kvm.victim=clock"]`` -> ``{"esx": {"idle_tax": 0.75}, ...}``.
    Values are read as JSON when they parse (numbers, true/false, lists), else as strings."""
    overrides: dict[str, dict[str, Any]] = {}
    problems = []
    for item in items:
        target, sep, text = item.partition("=")
        policy, dot, key = target.partition(".")
        if not (sep and dot and policy and key):
            problems.append(f"--param {item!r}: expected POLICY.KEY=VALUE, e.g. esx.idle_tax=0.75")
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides.setdefault(policy, {})[key] = value
    if problems:
        raise UsageError(*problems)
    return overrides


def choose_policies(cli_names: Sequence[str], scenario_policies: Sequence[dict],
                    overrides: dict[str, dict[str, Any]]) -> list[dict]:
    """The policies to run as ``[{"name", "params"}]``: ``--policy`` names (with no params but
    the overrides) replace the scenario's list; with neither, the static baseline."""
    if cli_names:
        chosen = [{"name": name, "params": {}} for name in cli_names]
    elif scenario_policies:
        chosen = [{"name": p["name"], "params": dict(p.get("params") or {})} for p in scenario_policies]
    else:
        chosen = [{"name": DEFAULT_POLICY, "params": {}}]
    names = {choice["name"] for choice in chosen}
    stray = sorted(set(overrides) - names)
    if stray:
        raise UsageError(*(f"--param {name}.*: policy {name!r} is not among the policies run "
                           f"({', '.join(sorted(names))})" for name in stray))
    for choice in chosen:
        choice["params"].update(overrides.get(choice["name"], {}))
    return chosen


def build_policies(choices: Sequence[dict]) -> list[Policy]:
    """Instantiate every chosen policy before any run starts, so that a typo in the last one
    is reported at once, with all the others."""
    policies, problems = [], []
    for choice in choices:
        try:
            policies.append(load_policy(choice["name"]).create(choice["params"]))
        except (UnknownPolicyError, BrokenPolicyError) as exc:
            problems.append(str(exc))
        except PolicyParameterError as exc:
            problems.extend(_parameter_problems(exc))
    if problems:
        raise UsageError(*problems)
    return policies


class ProgressLine:
    """``[esx]  42%`` on stderr: rewritten in place once per percent on a terminal; on a pipe or
    a log file, one line per 10% so that the log stays readable."""

    def __init__(self, label: str, stream: TextIO, enabled: bool = True):
        self.label, self.stream, self.enabled = label, stream, enabled
        self.shown = -1
        self.started = time.monotonic()
        isatty = getattr(stream, "isatty", None)
        self.interactive = bool(isatty and isatty())

    def __call__(self, fraction: float) -> None:
        percent = int(min(max(fraction, 0.0), 1.0) * 100)
        step = 1 if self.interactive else 10
        if self.enabled and percent >= self.shown + step or (self.enabled and self.shown < 0):
            self.shown = percent
            if self.interactive:
                self.stream.write(f"\r[{self.label}] {percent:3d}%")
            elif percent < 100:
                self.stream.write(f"[{self.label}] {percent:3d}%\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            lead = "\r" if self.interactive else ""
            self.stream.write(f"{lead}[{self.label}] done in {time.monotonic() - self.started:.1f} s\n")
            self.stream.flush()

    def abandon(self) -> None:
        """End the line, so that an error message does not start in the middle of it."""
        if self.enabled and self.shown >= 0 and self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def command_simulate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scenario, scenario_policies = load_scenario_file(args.scenario)
    choices = choose_policies(args.policy or [], scenario_policies, parse_param_overrides(args.param or []))
    policies = build_policies(choices)

    summaries = []
    for policy in policies:
        progress = ProgressLine(policy.name, err, enabled=not args.quiet)
        progress(0.0)
        try:
            result = simulate(scenario, policy, progress=progress)
        except BaseException:
            progress.abandon()
            raise
        progress.finish()
        summaries.append(result.summary)

    if args.json:
        out.write(json.dumps(summaries, indent=2) + "\n")
    else:
        out.write(format_simulation(summaries, scenario_title(scenario)))
    return 0


def scenario_title(scenario: Any) -> str:
    vms = len(scenario.vms)
    return (f"Scenario {scenario.name!r}: {vms} VM{'s' if vms != 1 else ''} on a "
            f"{scenario.host.memory_mb:,} MB host, {scenario.duration_s:g} s simulated, seed {scenario.seed}")


@dataclasses.dataclass(frozen=True)
class Column:
    group: str          # printed above the first column of a run of columns with the same group
    title: str
    align: str          # "<" text, ">" numbers
    cell: Callable[..., str]


VM_COLUMNS = (
    Column("", "VM", "<", lambda s, vm: str(vm.get("name", "?"))),
    Column("", "policy", "<", lambda s, vm: str(s.get("policy", "?"))),
    Column("", "state", "<", lambda s, vm: str(vm.get("state", "?"))),
    Column("", "slowdown", ">", lambda s, vm: _ratio(vm.get("slowdown"))),
    Column("", "refs", ">", lambda s, vm: _count(vm.get("refs_done"))),
    Column("host swap", "ins", ">", lambda s, vm: _fault(vm, "host_swap_in")),
    Column("host swap", "outs", ">", lambda s, vm: _fault(vm, "host_swap_out")),
    Column("guest paging", "reads", ">", lambda s, vm: _fault(vm, "guest_pagefile_read")),
    Column("guest paging", "outs", ">", lambda s, vm: _fault(vm, "guest_page_out")),
    Column("double", "paging", ">", lambda s, vm: _fault(vm, "double_paging")),
    Column("peak MB", "resident", ">", lambda s, vm: _mb(vm.get("peak_resident_mb"))),
    Column("peak MB", "host-swapped", ">", lambda s, vm: _mb(vm.get("host_swapped_peak_mb"))),
    Column("peak MB", "ballooned", ">", lambda s, vm: _mb(vm.get("ballooned_peak_mb"))),
    Column("peak MB", "guest-paged", ">", lambda s, vm: _mb(vm.get("guest_paged_peak_mb"))),
)

HOST_COLUMNS = (
    Column("", "policy", "<", lambda s, host: str(s.get("policy", "?"))),
    Column("", "version", "<", lambda s, host: str(s.get("policy_version", "?"))),
    Column("", "VMs", "<", lambda s, host: _vm_states(s.get("vms", []))),
    Column("mean", "slowdown", ">", lambda s, host: _ratio(s.get("slowdown"))),
    Column("", "fairness", ">", lambda s, host: _number(s.get("fairness"), 3)),
    Column("host used MB", "peak", ">", lambda s, host: _mb(host.get("peak_used_mb"))),
    Column("host used MB", "mean", ">", lambda s, host: _mb(host.get("mean_used_mb"))),
    Column("host swap", "peak MB", ">", lambda s, host: _mb(host.get("host_swap_peak_mb"))),
    Column("smart paging", "peak MB", ">", lambda s, host: _mb(host.get("smart_paging_peak_mb"))),
    Column("sharing saved", "mean MB", ">", lambda s, host: _mb(host.get("sharing_saved_mb_mean"))),
    Column("overcommit", "ratio", ">", lambda s, host: _number(host.get("overcommit_ratio"), 2)),
)


def format_simulation(summaries: Sequence[dict], title: str | None = None) -> str:
    """The comparison a capacity planner reads: one row per VM and policy, the policies of a VM
    next to each other, then one row per policy for the host. Missing values print as ``-``."""
    vm_rows: list[list[str] | None] = []
    for name in _vm_names(summaries):
        if vm_rows and len(summaries) > 1:
            vm_rows.append(None)
        vm_rows += [[c.cell(s, vm) for c in VM_COLUMNS]
                    for s in summaries for vm in s.get("vms", []) if vm.get("name") == name]
    host_rows = [[c.cell(s, s.get("host", {})) for c in HOST_COLUMNS] for s in summaries]
    lines = []
    if title:
        lines += [title, ""]
    lines += ["VMs (slowdown: simulated time per reference against the same VM unconstrained)"]
    lines += format_table(VM_COLUMNS, vm_rows)
    lines += ["", "Host"]
    lines += format_table(HOST_COLUMNS, host_rows)
    notes = [f"  {s.get('policy')}: {vm.get('name')} refused: {vm['refused_reason']}"
             for s in summaries for vm in s.get("vms", []) if vm.get("refused_reason")]
    if notes:
        lines += ["", "Notes"] + notes
    engines = sorted({str(s["engine_version"]) for s in summaries if s.get("engine_version")})
    if engines:
        lines += ["", f"engine {', '.join(engines)}"]
    return "\n".join(lines) + "\n"


def _vm_names(summaries: Sequence[dict]) -> list[str]:
    names: dict[str, None] = {}     # insertion-ordered set: the scenario's VM order
    for s in summaries:
        names.update((str(vm.get("name")), None) for vm in s.get("vms", []))
    return list(names)


def format_table(columns: Sequence[Column], rows: Sequence[Sequence[str] | None]) -> list[str]:
    """Aligned plain-text columns under a two-line header (group, title); a None row is a blank
    separator line."""
    groups = [c.group if i == 0 or c.group != columns[i - 1].group else "" for i, c in enumerate(columns)]
    widths = [max([len(c.title), len(g)] + [len(row[i]) for row in rows if row is not None])
              for i, (c, g) in enumerate(zip(columns, groups))]

    def line(cells: Sequence[str], aligns: Sequence[str]) -> str:
        return "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(cells, aligns, widths)).rstrip()

    out = []
    if any(groups):
        out.append(line(groups, "<" * len(columns)))
    out.append(line([c.title for c in columns], [c.align for c in columns]))
    out += ["" if row is None else line(row, [c.align for c in columns]) for row in rows]
    return out


def _vm_states(vms: Sequence[dict]) -> str:
    """``"2 ran, 1 refused"``: the usual states first, any other the engine reports after them."""
    states = [str(vm.get("state", "?")) for vm in vms]
    order = [s for s in ("ran", "refused", "blocked") if s in states]
    order += sorted(set(states) - set(order))
    return ", ".join(f"{states.count(s)} {s}" for s in order) or "-"


def _fault(vm: dict, kind: str) -> str:
    return _count((vm.get("faults") or {}).get(kind))


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _mb(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.1f}"


def _ratio(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}x"


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


# --- mrc -----------------------------------------------------------------------------------

def parse_frames(text: str) -> list[tuple[str, float]]:
    """``"64,128"`` -> ``[("frames", 64), ("frames", 128)]``; ``"1%,5%"`` -> ``[("percent", 1.0), ...]``.
    Checked before the trace is read, so a typo does not wait for a 20 M-line file."""
    specs, problems = [], []
    for item in (part.strip() for part in text.split(",")):
        try:
            if item.endswith("%"):
                percent = float(item[:-1])
                if not (percent > 0 and math.isfinite(percent)):
                    raise ValueError(item)
                specs.append(("percent", percent))
            else:
                count = int(item)
                if count < 1:
                    raise ValueError(item)
                specs.append(("frames", count))
        except ValueError:
            problems.append(f"--frames: {item!r} is neither a positive number of frames nor a positive percentage like 5%")
    if problems:
        raise UsageError(*problems)
    return specs


def frames_for(specs: Sequence[tuple[str, float]], footprint: int) -> list[int]:
    """Percentages of the footprint become floor(f * footprint) frames, at least 1: the
    cache-size rule of shared/traces/README.md, so results compare with its expected files."""
    return [int(value) if kind == "frames" else max(1, math.floor(value / 100 * footprint))
            for kind, value in specs]


def command_mrc(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    specs = parse_frames(args.frames)
    ids = load_trace(args.trace)
    stats = trace_stats(ids)
    frames = frames_for(specs, stats["footprint"])

    misses = miss_counts(ids, args.replacement, frames)
    report = {
        "trace": str(args.trace), "replacement": args.replacement,
        "references": stats["refs"], "footprint": stats["footprint"],
        "results": [{"frames": n, "misses": int(m), "miss_ratio": int(m) / stats["refs"]}
                    for n, m in zip(frames, misses)],
    }
    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        out.write(format_mrc(report))
    return 0


MRC_COLUMNS = (
    Column("", "frames", ">", lambda r: f"{r['frames']:,}"),
    Column("", "references", ">", lambda r: f"{r['references']:,}"),
    Column("", "misses", ">", lambda r: f"{r['misses']:,}"),
    Column("miss", "ratio", ">", lambda r: f"{r['miss_ratio']:.6f}"),
)


def format_mrc(report: dict) -> str:
    rows = [[c.cell({**r, "references": report["references"]}) for c in MRC_COLUMNS] for r in report["results"]]
    lines = [f"{report['trace']}: {report['references']:,} references, {report['footprint']:,} distinct pages; "
             f"{report['replacement'].upper()}, cold misses included"]
    lines += format_table(MRC_COLUMNS, rows)
    return "\n".join(lines) + "\n"


# --- plugins -------------------------------------------------------------------------------

def command_plugins(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    infos = installed_policies()
    if args.json:
        out.write(json.dumps([dataclasses.asdict(info) for info in infos], indent=2) + "\n")
    else:
        out.write(format_plugins(infos))
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


# --- entry point ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmemlab", description="Simulate virtualization-host memory policies page by page.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = commands.add_parser(
        "simulate", help="run a scenario under one or more policies and compare them",
        description="Run a scenario under each policy and print a comparison. Policies come from "
                    "--policy (which replaces the scenario's list and its parameters), else from the "
                    "scenario's \"policies\", else the static baseline.")
    sim.add_argument("scenario", metavar="SCENARIO.json")
    sim.add_argument("--policy", action="append", metavar="NAME", help="policy to run; repeat to compare several")
    sim.add_argument("--param", action="append", metavar="NAME.KEY=VALUE",
                     help="set a policy parameter (VALUE is read as JSON if it parses, else as a string)")
    sim.add_argument("--json", action="store_true", help="print the run summaries as a JSON list")
    sim.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sim.set_defaults(run=command_simulate)

    mrc = commands.add_parser(
        "mrc", help="miss counts of a recorded trace under a replacement policy",
        description="Replay a page-reference trace (text, gzip text or .npy) through a cache of N "
                    "frames, starting empty, and count misses, cold misses included.")
    mrc.add_argument("trace", metavar="TRACE")
    mrc.add_argument("--replacement", required=True, choices=REPLACEMENTS)
    mrc.add_argument("--frames", required=True, metavar="N[,N...]",
                     help="cache sizes in frames, or percentages of the trace's distinct pages (1%%,5%%)")
    mrc.add_argument("--json", action="store_true")
    mrc.set_defaults(run=command_mrc)

    plugins = commands.add_parser("plugins", help="list installed policies and their parameters")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(run=command_plugins)
    return parser


# ScenarioError and TraceError can also come from inside a run (a scenario built past the schema,
# a trace file that changed since the scenario was checked): still the user's input, no traceback.
USER_ERRORS = (UsageError, ScenarioValidationError, ScenarioError, TraceError, UnknownPolicyError,
               BrokenPolicyError, PolicyParameterError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help, or argparse's own usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args, sys.stdout, sys.stderr)
    except USER_ERRORS as exc:
        for line in _error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE


def _error_lines(exc: Exception) -> list[str]:
    if isinstance(exc, UsageError):
        return exc.lines
    if isinstance(exc, ScenarioValidationError):
        return exc.lines()
    if isinstance(exc, PolicyParameterError):
        return _parameter_problems(exc)
    return str(exc).splitlines() or [type(exc).__name__]


def _parameter_problems(exc: PolicyParameterError) -> list[str]:
    return [f"policy {exc.policy!r}: parameter {path}: {message}"
            for path, messages in flatten_errors(exc.messages).items() for message in messages]


if __name__ == "__main__":
    sys.exit(main())
