"""``vmemlab sweep``: a scenario run at every point of a grid of axes (a path into its document and
the values it takes there), under each policy; each point and policy is one simulation, run in
parallel processes (``--jobs``), the results in point order whatever the number of processes."""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

from ..engine import simulate
from ..engine.hooks import describe_failure
from ..policies import BrokenPolicyError, UnknownPolicyError, load_policy, policy_event_problems
from ..scenario import ScenarioValidationError, flatten_errors, load_scenario
from ..sdk import PolicyParameterError
from ..sweep_axes import Axis, AxisError, axis_from_text, blamed_axis, point_document, point_label, points
from .common import Column, UsageError, _count, _mb, _number, _ratio, format_table
from .parallel import ProcessFailed, run_in_processes
from .simulate import build_policies, choose_policies, parse_param_overrides
from .submit import _read_document, listed_policies

MAX_PROBLEMS_SHOWN = 20     # a bad value repeated over a big grid must not bury the other problems


@dataclass(frozen=True)
class PlannedRun:
    values: tuple[Any, ...]     # one per axis
    policy: str
    params: dict[str, Any]      # effective: the policy's defaults filled in
    scenario: Any               # the point's Scenario, checked


def command_sweep(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    document = _read_document(args.scenario)
    axes = parse_axes(args.axis or [])
    # set even when they are the scenario's own, so that axes can name policies[NAME]
    document["policies"] = choose_policies(args.policy or [], listed_policies(document),
                                           parse_param_overrides(args.param or []))
    build_policies(document["policies"])     # an unknown name or bad --param once, not once per point
    runs = plan_runs(document, axes, Path(args.scenario).parent)
    jobs = min(args.jobs or os.cpu_count() or 1, len(runs))
    results = run_all(runs, axes, jobs, err, show=not args.quiet)
    rows = sweep_rows(runs, axes, results)
    if args.json:
        out.write(json.dumps(rows, indent=2) + "\n")
    else:
        out.write(format_sweep(rows, [axis.path for axis in axes]))
    return 1 if any(row["status"] != "succeeded" for row in rows) else 0


def parse_axes(texts: Sequence[str]) -> list[Axis]:
    """``--axis`` options to axes; every mistake is a UsageError line naming its option."""
    axes, problems = [], []
    for text in texts:
        try:
            axes.append(axis_from_text(text))
        except AxisError as exc:
            problems.append(f"--axis {text}: {_message(exc, text, text.partition('=')[0].strip())}")
    paths = [axis.path for axis in axes]
    problems += [f"--axis {path}: given twice; put all its values in one --axis"
                 for i, path in enumerate(paths) if path in paths[:i]]
    if not texts:
        problems.append("give at least one --axis PATH=V1,V2,... or PATH=START:STOP:STEP")
    if problems:
        raise UsageError(*problems)
    return axes


def plan_runs(document: dict, axes: Sequence[Axis], base_dir: Path) -> list[PlannedRun]:
    """Every point's document built and checked, scenario and policies, before any run: a
    UsageError naming the axis (or the point) of each problem."""
    runs: list[PlannedRun] = []
    problems: list[str] = []
    for values in points(axes):
        try:
            point = point_document(document, axes, values)
        except AxisError as exc:
            path = axes[exc.args[1]].path
            problems.append(f"--axis {path}: {_message(exc, path)}")
            continue
        errors, scenario, policies = _check_point(point, base_dir)
        for field, messages in errors.items():
            where = _blame(point, axes, values, field)
            problems += [f"{where}: {field}: {message}" for message in messages]
        if not errors:
            runs += [PlannedRun(tuple(values), name, params, scenario) for name, params in policies]
    if problems:
        unique = list(dict.fromkeys(problems))
        hidden = len(unique) - MAX_PROBLEMS_SHOWN
        raise UsageError(*unique[:MAX_PROBLEMS_SHOWN], *([f"... and {hidden} more"] if hidden > 0 else []))
    return runs


def _check_point(point: dict, base_dir: Path) -> tuple[dict[str, list[str]], Any, list[tuple[str, dict]]]:
    """``(problems by field path, scenario, [(policy, effective params)])`` of one point."""
    try:
        scenario, policies = load_scenario(point, base_dir=base_dir)
    except ScenarioValidationError as exc:
        return exc.errors, None, []
    problems: dict[str, list[str]] = {}
    chosen = []
    for i, choice in enumerate(policies):
        try:
            cls = load_policy(choice["name"])
            chosen.append((cls.name, cls.load_params(choice["params"])))
        except (UnknownPolicyError, BrokenPolicyError) as exc:
            problems[f"policies[{i}].name"] = [str(exc)]
        except PolicyParameterError as exc:
            problems.update(flatten_errors(exc.messages, f"policies[{i}].params"))
    problems.update(policy_event_problems(scenario.policy_events, policies))
    return problems, scenario, chosen


def _blame(point: dict, axes: Sequence[Axis], values: Sequence[Any], field: str) -> str:
    """The axis a problem's field lies under (``--axis host.memory_mb=0``), else the point."""
    owner = blamed_axis(point, axes, field)
    if owner is not None:
        return f"--axis {axes[owner].path}={json.dumps(values[owner])}"
    return f"at {point_label(axes, values)}"


def _message(exc: AxisError, *quoted: str) -> str:
    """The error without its leading ``'PATH': ``: the option named already says which."""
    message = str(exc)
    for text in quoted:
        if message.startswith(f"{text!r}: "):
            return message[len(repr(text)) + 2:]
    return message


# --- running ------------------------------------------------------------------------------------

def run_all(runs: Sequence[PlannedRun], axes: Sequence[Axis], jobs: int, err: TextIO,
            show: bool = True) -> list[tuple[dict | None, str | None]]:
    """``(summary, None)`` or ``(None, error)`` per run, in the runs' order; a line on ``err``
    as each finishes."""
    results: list[tuple[dict | None, str | None]] = [(None, None)] * len(runs)

    def finished(i: int, result: tuple[dict | None, str | None], done: int) -> None:
        results[i] = result
        if show:
            summary, error = result
            outcome = f"failed: {error}" if error else f"slowdown {_number((summary or {}).get('slowdown'), 2)}"
            err.write(f"[{done}/{len(runs)}] {point_label(axes, runs[i].values)} {runs[i].policy}: {outcome}\n")
            err.flush()

    def shown(i: int, result: Any, done: int) -> None:
        finished(i, (None, str(result)) if isinstance(result, ProcessFailed) else result, done)

    run_in_processes(simulate_run, [(run.scenario, run.policy, run.params) for run in runs], jobs, shown)
    return results


def simulate_run(scenario: Any, policy: str, params: dict) -> tuple[dict | None, str | None]:
    """One simulation; what the policy raises fails this run, never the sweep."""
    cls = None
    try:
        cls = load_policy(policy)
        trusts_guest = bool(cls.trusts_guest)        # as declared, before any of the plugin's code ran
        return simulate(scenario, cls.create(params), trusts_guest=trusts_guest).summary, None
    except Exception as exc:
        return None, describe_failure(exc, cls) if cls is not None else str(exc)


def sweep_rows(runs: Sequence[PlannedRun], axes: Sequence[Axis],
               results: Sequence[tuple[dict | None, str | None]]) -> list[dict]:
    """The rows of ``--json``, shaped as the service's sweep results (without run ids)."""
    from ..models.runs import metrics_from_summary   # here: SQLAlchemy's import is for this command only

    return [{"point": {axis.path: value for axis, value in zip(axes, run.values)},
             "policy": run.policy, "params": run.params,
             "status": "failed" if error else "succeeded", "error": error,
             "metrics": metrics_from_summary(summary or {})}
            for run, (summary, error) in zip(runs, results)]


# --- the table ----------------------------------------------------------------------------------

SWEEP_COLUMNS = (
    Column("", "policy", "<", lambda r: str(r.get("policy", "?"))),
    # a run that did not succeed says so where its slowdown would be
    Column("mean", "slowdown", ">",
           lambda r: _ratio(_metric(r, "slowdown")) if _succeeded(r) else str(r.get("status"))),
    Column("", "fairness", ">", lambda r: _number(_metric(r, "fairness"), 3)),
    Column("host used MB", "peak", ">", lambda r: _mb(_metric(r, "peak_used_mb"))),
    Column("host swap", "peak MB", ">", lambda r: _mb(_metric(r, "host_swap_peak_mb"))),
    Column("VMs", "refused", ">", lambda r: _count(_metric(r, "vms_refused"))),
    Column("VMs", "blocked", ">", lambda r: _count(_metric(r, "vms_blocked"))),
)


def format_sweep(rows: Sequence[dict], axis_paths: Sequence[str]) -> str:
    """The answer in one line, then a row per point and policy (a column per axis), then the
    failures; rows as ``--json`` prints them or the service's results give them."""
    def numbers(path: str) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (_at(r, path) for r in rows))

    columns = [Column("", path, ">" if numbers(path) else "<", lambda r, path=path: _value_text(_at(r, path)))
               for path in axis_paths] + list(SWEEP_COLUMNS)
    table: list[list[str] | None] = []
    several = len({r.get("policy") for r in rows}) > 1
    for i, row in enumerate(rows):
        if several and i and row.get("point") != rows[i - 1].get("point"):
            table.append(None)
        table.append([c.cell(row) for c in columns])
    lines = [worst_slowdown_line(rows, axis_paths), ""] + format_table(columns, table)
    failed = [f"  {_label(r, axis_paths)} {r.get('policy')}: {r.get('error') or r.get('status')}"
              for r in rows if not _succeeded(r)]
    if failed:
        lines += ["", "Runs that did not succeed"] + failed
    return "\n".join(lines) + "\n"


def worst_slowdown_line(rows: Sequence[dict], axis_paths: Sequence[str]) -> str:
    """``Worst mean slowdown over the sweep: esx 1.42x at host.memory_mb=4096; static 1.00x at
    every point (a VM refused at 2 of 3 points); best with every VM admitted: esx.``: each
    policy's worst run (the first point that reaches it), and the policy whose worst is the least
    bad, among those that never refused a VM if any."""
    parts, worst, admitting = [], {}, {}
    for policy in dict.fromkeys(r.get("policy") for r in rows):
        mine = [r for r in rows if r.get("policy") == policy]
        measured = [r for r in mine if _succeeded(r) and _metric(r, "slowdown") is not None]
        if not measured:
            parts.append(f"{policy} -")
            continue
        top = max(measured, key=lambda r: _metric(r, "slowdown"))
        worst[policy] = _metric(top, "slowdown")
        same = len(mine) > 1 and all(_metric(r, "slowdown") == worst[policy] for r in mine)
        text = f"{policy} {_ratio(worst[policy])} at {'every point' if same else _label(top, axis_paths)}"
        refused = sum(1 for r in mine if (_metric(r, "vms_refused") or 0) > 0)
        if refused:
            text += f" (a VM refused at {refused} of {len(mine)} points)"
        else:
            admitting[policy] = worst[policy]
        parts.append(text)
    line = "Worst mean slowdown over the sweep: " + "; ".join(parts)
    if len(worst) > 1:
        candidates = admitting or worst
        least = min(candidates.values())
        best = ", ".join(p for p, s in candidates.items() if s == least)
        line += f"; best{' with every VM admitted' if admitting and len(admitting) < len(worst) else ''}: {best}"
    unsucceeded = Counter(str(r.get("status")) for r in rows if not _succeeded(r))
    line += "".join(f"; {n} of {len(rows)} runs {status}" for status, n in unsucceeded.items())
    return line + "."


def _metric(row: dict, name: str) -> Any:
    return (row.get("metrics") or {}).get(name)


def _succeeded(row: dict) -> bool:
    return row.get("status") == "succeeded"


def _at(row: dict, path: str) -> Any:
    return (row.get("point") or {}).get(path)


def _label(row: dict, axis_paths: Sequence[str]) -> str:
    return ", ".join(f"{path}={json.dumps(_at(row, path))}" for path in axis_paths)


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
