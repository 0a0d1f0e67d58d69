"""The ``vmemlab`` command line: simulate a scenario under one or more policies, compute miss
counts of a recorded trace, list installed policies; and run the service: migrate its database
(``db upgrade``), serve the API (``serve``), run a Celery worker (``worker``), both together on
one machine (``up``), and submit a scenario to a running service over HTTP (``submit``).

User mistakes (a bad scenario, an unknown policy, a malformed trace, a missing file) are printed
as ``error: ...`` lines on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

from .engine import ScenarioError, simulate
from .engine.config import REPLACEMENTS
from .engine.hooks import describe_failure
from .engine.mrc import miss_counts
from .engine.traces import TraceError, load_trace, trace_stats
from .client import FINISHED as FINISHED_STATUSES
from .policies import (DEFAULT_POLICY, policy_event_problems, BrokenPolicyError, UnknownPolicyError, broken_policies, installed_policies,
                       load_policy)
from .scenario import ScenarioValidationError, flatten_errors, load_scenario_file
from .sdk import Policy, PolicyParameterError
from .settings import SettingsError

EXIT_USAGE = 2


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


def build_policies(choices: Sequence[dict]) -> list[tuple[type[Policy], dict, bool]]:
    """Load every chosen policy and check its parameters before any run starts, so that a typo in
    the last one is reported at once, with all the others: ``(class, params, trust level)`` each,
    the trust level read before any code of the plugin's ran beyond its import."""
    loaded, problems = [], []
    for choice in choices:
        try:
            cls = load_policy(choice["name"])
            loaded.append((cls, check_params(cls, choice["params"]), bool(cls.trusts_guest)))
        except (UnknownPolicyError, BrokenPolicyError) as exc:
            problems.append(str(exc))
        except PolicyParameterError as exc:
            problems.extend(_parameter_problems(exc))
    if problems:
        raise UsageError(*problems)
    return loaded


def check_params(cls: type[Policy], params: dict) -> dict:
    """The parameters as the policy's schema loads them (PolicyParameterError if they do not)."""
    from marshmallow import ValidationError
    try:
        return cls.Params().load(dict(params or {}))
    except ValidationError as err:
        raise PolicyParameterError(cls.name, err.messages) from None


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
    if args.series and not args.json:
        raise UsageError("--series needs --json: the series are JSON")
    choices = choose_policies(args.policy or [], scenario_policies, parse_param_overrides(args.param or []))
    loaded = build_policies(choices)
    problems = policy_event_problems(scenario.policy_events, choices)
    if problems:
        raise ScenarioValidationError(problems)

    summaries = []
    for cls, params, trusts_guest in loaded:
        progress = ProgressLine(cls.name, err, enabled=not args.quiet)
        progress(0.0)
        try:
            # the plugin's own code (constructor, hooks) fails its row, never the other policies'
            result = simulate(scenario, cls.create(params), progress=progress, trusts_guest=trusts_guest)
        except (KeyboardInterrupt, SystemExit):
            progress.abandon()
            raise
        except Exception as exc:
            progress.abandon()
            message = describe_failure(exc, cls)
            err.write(f"error: {message}\n")
            summaries.append({"policy": cls.name, "policy_version": cls.version, "error": message, "vms": []})
            continue
        progress.finish()
        summaries.append({**result.summary, "series": result.series, "events": result.events}
                         if args.series else result.summary)

    if args.json:
        out.write(json.dumps(summaries, indent=2) + "\n")
    else:
        out.write(format_simulation(summaries, scenario_title(scenario)))
    return 1 if any("error" in s for s in summaries) else 0


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
    Column("allocated MB", "last min", ">", lambda s, vm: _mb(vm.get("allocated_last_minute_mb"))),
)

HOST_COLUMNS = (
    Column("", "policy", "<", lambda s, host: str(s.get("policy", "?"))),
    Column("", "version", "<", lambda s, host: str(s.get("policy_version", "?"))),
    Column("", "VMs", "<", lambda s, host: "failed" if s.get("error") else _vm_states(s.get("vms", []))),
    Column("mean", "slowdown", ">", lambda s, host: _ratio(s.get("slowdown"))),
    Column("", "fairness", ">", lambda s, host: _number(s.get("fairness"), 3)),
    Column("host used MB", "peak", ">", lambda s, host: _mb(host.get("peak_used_mb"))),
    Column("host used MB", "mean", ">", lambda s, host: _mb(host.get("mean_used_mb"))),
    Column("host swap", "peak MB", ">", lambda s, host: _mb(host.get("host_swap_peak_mb"))),
    Column("smart paging", "peak MB", ">", lambda s, host: _mb(host.get("smart_paging_peak_mb"))),
    Column("sharing saved", "mean MB", ">", lambda s, host: _mb(host.get("sharing_saved_mb_mean"))),
    Column("overcommit", "ratio", ">", lambda s, host: _number(host.get("overcommit_ratio"), 2)),
    Column("", "states % of time", "<", lambda s, host: _states(host.get("states_pct"))),
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
    notes += [f"  {s.get('policy')}: {note}" for s in summaries for note in s.get("notes", [])
              if "refused" not in note]
    notes += [f"  {s.get('policy')}: failed: {s['error']}" for s in summaries if s.get("error")]
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


def _states(shares: Any) -> str:
    if not shares:
        return "-"
    return " ".join(f"{state} {pct:.0f}" for state, pct in shares.items())


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


# --- the service: db upgrade, serve, worker, up, submit ----------------------------------------

def _settings():
    from .settings import get_settings

    return get_settings()      # raises SettingsError (a user error) for a bad variable


def _display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:          # not a URL SQLAlchemy parses: show it as it is
        return url


def upgrade_database(out: TextIO, prefix: str = "") -> None:
    """Bring the settings' database to the latest migration and say what happened."""
    from . import db

    settings = _settings()
    if settings.embedded_broker or settings.database_url.startswith("sqlite"):
        settings.ensure_dirs()
    try:
        before = db.current_revision()
        db.upgrade()
        after = db.current_revision()
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            raise UsageError(f"database {_display_url(settings.database_url)}: cannot migrate: "
                             f"{db.first_line(exc)}") from None
        raise
    change = "already at the latest revision" if before == after else f"migrated from {before or 'empty'}"
    out.write(f"{prefix}database {_display_url(settings.database_url)} at revision {after} ({change})\n")
    out.flush()


def command_db_upgrade(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    upgrade_database(out)
    return 0


def command_tokens_create(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from . import auth, db

    upgrade_database(err, prefix="vmemlab tokens: ")
    with db.session_scope() as session:
        try:
            row, token = auth.issue_token(session, args.name, args.role)
        except auth.TokenError as exc:
            raise UsageError(str(exc)) from None
        row_id = row.id
    err.write(f"token {row_id} {args.name!r} ({args.role}) created; it is shown only now, keep it:\n")
    err.flush()
    out.write(token + "\n")
    return 0


def _tokens_table_ready() -> None:
    from . import db

    settings = _settings()
    try:
        current, head = db.current_revision(), db.head_revision()
    except Exception as exc:
        raise UsageError(f"database {_display_url(settings.database_url)}: cannot read it: "
                         f"{db.first_line(exc)}") from None
    if current != head:
        raise UsageError(f"database {_display_url(settings.database_url)} is at revision {current or 'empty'}, "
                         f"not {head}: run `vmemlab db upgrade` first")


def command_tokens_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from . import auth, db

    _tokens_table_ready()
    with db.session_scope() as session:
        rows = [(str(t.id), t.name, t.role, t.prefix + "...", _when(t.created_at), _when(t.revoked_at) or "-")
                for t in auth.list_tokens(session, include_revoked=args.all)]
    columns = [Column("", title, align, str) for title, align in
               (("id", ">"), ("name", "<"), ("role", "<"), ("token", "<"), ("created", "<"), ("revoked", "<"))]
    out.write("\n".join(format_table(columns, rows)) + "\n" if rows else "no tokens (vmemlab tokens create --name NAME)\n")
    return 0


def command_tokens_revoke(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from . import auth, db

    _tokens_table_ready()
    with db.session_scope() as session:
        try:
            row = auth.revoke_token(session, args.token)
        except auth.TokenError as exc:
            raise UsageError(str(exc)) from None
        out.write(f"token {row.id} {row.name!r} ({row.role}, {row.prefix}...) revoked\n")
    return 0


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else ""


def _require_api() -> None:
    from .serving import api_available

    if not api_available():
        raise UsageError("the API is not installed: service/app.py (create_app) is missing")


def _check_port(host: str, port: int) -> None:
    """Refuse a port something else listens on, before starting anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                             "(is another server running? choose another --port)") from None


def command_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .serving import default_web_workers, gunicorn_options, load_app, run_gunicorn

    _require_api()
    _settings()
    if not args.no_upgrade:           # --no-upgrade: the database is not touched before serving
        upgrade_database(out)
    _check_port(args.host, args.port)
    if not args.no_upgrade:
        _warn_without_tokens(out)
    from . import db

    db.dispose_engines()        # no connection of this process may be inherited by the API's workers
    options = gunicorn_options(args.host, args.port, args.workers or default_web_workers(), args.threads,
                               args.access_log)
    options["loglevel"] = args.loglevel
    out.flush()
    run_gunicorn(options, load_app)
    return 0


def command_worker(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .serving import celery_worker_argv

    settings = _settings()
    if settings.embedded_broker:
        settings.ensure_dirs()
    argv = celery_worker_argv(args.concurrency, args.loglevel, args.hostname, args.queues, args.quiet,
                              embedded=settings.embedded_broker)
    out.flush()
    err.flush()
    os.execv(argv[0], argv)     # Celery itself gets the signals from here on
    return 0                    # not reached (tests replace os.execv)


def _local_url(host: str, port: int) -> str:
    """The URL to reach a server listening on ``host`` from this machine."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def command_up(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .client import Client
    from .serving import Supervisor, celery_worker_argv

    _require_api()
    settings = _settings()
    documents = [(path, _submission(path, args.policy or [], args.param or [])) for path in args.submit or []]
    _check_port(args.host, args.port)
    upgrade_database(out, prefix="vmemlab up: ")
    settings.ensure_dirs()
    first_token = _first_admin_token(out)
    if first_token:           # now: should the start fail below, the token is not lost unseen
        out.write(f"vmemlab up: token   {first_token}\n"
                  "vmemlab up:         an admin token, made now because the database had none; it is shown only "
                  "once: keep it (vmemlab tokens create makes more)\n")
        out.flush()
    submit_token = (os.environ.get("VMEMLAB_TOKEN") or _temporary_token()) if documents else None

    env = dict(os.environ, VMEMLAB_DATA_DIR=str(settings.data_dir), PYTHONUNBUFFERED="1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # said once here instead of Celery's screenful (`vmemlab worker` alone still shows it)
        out.write("vmemlab up: running as root; a worker would rather run as an unprivileged user\n")
        env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"),
                                                       "ignore:You're running the worker with superuser privileges"]))
    me = [sys.executable, "-m", "service.cli"]
    quiet = args.loglevel.lower() in ("warning", "error", "critical")
    supervisor = Supervisor(out, env=env)
    supervisor.install_signal_handlers()
    try:
        worker = supervisor.start("worker", celery_worker_argv(args.concurrency, args.loglevel, quiet=quiet,
                                                               embedded=settings.embedded_broker))
        api = supervisor.start("api", me + [
            "serve", "--host", args.host, "--port", str(args.port), "--no-upgrade", "--loglevel", args.loglevel,
            "--threads", str(args.threads)] + (["--workers", str(args.workers)] if args.workers else []))
        client = Client(_local_url(args.host, args.port), token=submit_token)
        try:
            client.wait_until_up(timeout=args.start_timeout, alive=lambda: supervisor.all_alive()
                                 and not supervisor.stopping)
        except Exception as exc:
            if not supervisor.stopping:
                supervisor.stop("the API did not start")
                for line in getattr(exc, "lines", [str(exc)]):
                    err.write(f"error: {line}\n")
            supervisor.wait()
            return 1
        broker = ("embedded (SQLite in " + str(settings.data_dir) + ")" if settings.embedded_broker
                  else _display_url(settings.broker_url))
        out.write(
            f"vmemlab up: API     {client.api_url('')}  (health {client.api_url('/health')}, pid {api.pid})\n"
            + (f"vmemlab up: docs    {client.api_url('/docs')}  (OpenAPI {client.api_url('/openapi.json')})\n"
               if settings.docs_ui_url else "")
            + f"vmemlab up: worker  Celery, broker {broker} (pid {worker.pid})\n"
            f"vmemlab up: submit  vmemlab submit SCENARIO.json --url {client.base_url} --token TOKEN --wait\n"
            + ("" if first_token else "vmemlab up: tokens  writes need a bearer token: vmemlab tokens list / create\n")
            + "vmemlab up: Ctrl-C stops both\n")
        out.flush()
        status = 0
        for path, document in documents:
            if supervisor.stopping:
                break
            out.write(f"\nvmemlab up: submitting {path}\n")
            out.flush()
            try:
                code = submit_document(client, document, out, err, wait=True, quiet=args.quiet,
                                       should_stop=lambda: supervisor.stopping or supervisor.check() is not None)
            except Exception as exc:
                from .client import APIError

                if not isinstance(exc, APIError):
                    raise
                if supervisor.stopping:      # the API went away because we stop it: no news
                    break
                for line in exc.lines:
                    err.write(f"error: {line}\n")
                code = EXIT_USAGE if exc.client_error else 1
            status = status or code
        if not supervisor.stopping:
            out.write(f"\nvmemlab up: serving at {client.base_url} until stopped (Ctrl-C)\n")
            out.flush()
        code = supervisor.wait()
        return code or (status if args.exit_status else 0)
    finally:
        if submit_token and not os.environ.get("VMEMLAB_TOKEN"):
            _revoke_quietly(submit_token)
        for child in supervisor.children:      # never leave a child behind on an error here
            if child.alive():
                child.send(15)
                try:
                    child.process.wait(timeout=30)
                except Exception:
                    child.send(9)
        supervisor.restore_signal_handlers()


def _first_admin_token(out: TextIO) -> str | None:
    """Without any token the service would refuse every write: make an admin token then, to print
    (unless VMEMLAB_ADMIN_TOKEN gives one)."""
    from . import auth, db

    if _has_usable_token(out, "vmemlab up: "):
        return None
    with db.session_scope() as session:
        return auth.create_token(session, "vmemlab up (first start)", auth.ADMIN)


def _has_usable_token(out: TextIO, prefix: str) -> bool:
    """VMEMLAB_ADMIN_TOKEN (stored now if new) or any unrevoked token in the database."""
    from . import auth, db

    if _configured_token(out, prefix):
        return True
    with db.session_scope() as session:
        return auth.has_tokens(session)


def _configured_token(out: TextIO, prefix: str) -> bool:
    """Store VMEMLAB_ADMIN_TOKEN's hash if it is set; say so when it cannot be used. True if
    it is set and usable."""
    from sqlalchemy.exc import IntegrityError

    from . import auth, db

    token = _settings().admin_token
    if token is None:
        return False
    try:
        with db.session_scope() as session:
            state = auth.ensure_configured_token(session, token)
    except IntegrityError:            # another process stored it at the same moment
        state = "present"
    if state == "revoked":
        out.write(f"{prefix}warning: VMEMLAB_ADMIN_TOKEN was revoked and stays revoked: set a new one\n")
    elif state == "not admin":
        out.write(f"{prefix}warning: VMEMLAB_ADMIN_TOKEN is a token of another role; set a new one\n")
    elif state == "added":
        out.write(f"{prefix}VMEMLAB_ADMIN_TOKEN stored as an admin token (earlier values revoked)\n")
    return state in ("added", "present")


def _warn_without_tokens(out: TextIO) -> None:
    if not _has_usable_token(out, ""):
        out.write("warning: no API tokens: every write will be refused (401). Create one with "
                  "`vmemlab tokens create --name NAME --role admin`, or set VMEMLAB_ADMIN_TOKEN\n")


def _temporary_token() -> str:
    """A write token for ``up --submit``'s own submissions, revoked when ``up`` ends."""
    from . import auth, db

    with db.session_scope() as session:
        return auth.create_token(session, "vmemlab up --submit (temporary)", auth.WRITE)


def _revoke_quietly(token: str) -> None:
    from . import auth, db

    try:
        with db.session_scope() as session:
            auth.revoke_token(session, token)
    except Exception:           # the database went away with the service: the token dies with it
        pass


def _read_document(path: str) -> dict:
    """The JSON of a scenario file, with the file-level mistakes as ``error:`` lines; the server
    validates the rest (it also knows the stored hosts, templates and traces a document names)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: a scenario must be a JSON object")
    return document


def _submission(path: str, cli_policies: Sequence[str], params: Sequence[str]) -> dict:
    """The document to POST: the file, with its policies replaced by ``--policy`` (and their
    parameters set by ``--param``) when given."""
    document = _read_document(path)
    overrides = parse_param_overrides(params)
    if cli_policies or overrides:
        listed = document.get("policies") if isinstance(document.get("policies"), list) else []
        listed = [p for p in listed if isinstance(p, dict) and "name" in p]
        document["policies"] = choose_policies(cli_policies, listed, overrides)
    return document


def command_submit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .client import Client

    document = _submission(args.scenario, args.policy or [], args.param or [])
    try:
        client = Client(args.url, token=args.token)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None
    try:
        return submit_document(client, document, out, err, wait=args.wait, quiet=args.quiet,
                               timeout_s=args.timeout, json_output=args.json, poll_s=args.poll)
    except KeyboardInterrupt:
        err.write("\nstopped waiting; the runs go on on the server\n")
        return 130


def submit_document(client: Any, document: dict, out: TextIO, err: TextIO, *, wait: bool,
                    quiet: bool = False, timeout_s: float | None = None, json_output: bool = False,
                    poll_s: float = 0.5, should_stop: Callable[[], bool] | None = None) -> int:
    """POST the document as an experiment; with ``wait``, follow its runs to the end and print
    the comparison of their summaries. 0 if every run succeeded (or not waiting), 1 if not."""
    experiment = client.create_experiment(document)
    from .client import run_ids

    experiment_id = int(experiment["id"])
    runs = experiment.get("runs") or []
    ids = run_ids(experiment)
    names = {int(r["id"]): _run_policy(r) for r in runs if isinstance(r, dict)}
    report = client.report_url(experiment_id)
    listing = ", ".join(f"{names.get(i, '?')} (run {i})" for i in ids)
    out.write(f"experiment {experiment_id}: {len(ids)} run{'s' if len(ids) != 1 else ''}: {listing}\n")
    out.flush()
    if not wait:
        out.write(f"report: {report}\n")
        return 0

    progress = RunsProgress(ids, names, err, enabled=not quiet)
    final: dict[int, dict] = {}
    started = time.monotonic()
    while len(final) < len(ids):
        for run_id in ids:
            if run_id in final:
                continue
            run = client.run(run_id)
            names.setdefault(run_id, _run_policy(run))
            progress.update(run_id, run)
            if run.get("status") in FINISHED_STATUSES:
                final[run_id] = run
        if len(final) == len(ids):
            break
        if should_stop is not None and should_stop():
            progress.end()
            err.write(f"stopped waiting for experiment {experiment_id}; report: {report}\n")
            return 1
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            progress.end()
            err.write(f"error: the runs did not finish within {timeout_s:g} s; they go on on the server: {report}\n")
            return 1
        time.sleep(poll_s)
    progress.end()
    if not quiet:
        err.write(f"{len(ids)} run{'s' if len(ids) != 1 else ''} finished {time.monotonic() - started:.1f} s "
                  "after the submission\n")
        err.flush()

    ordered = [final[i] for i in ids]
    summaries = [r["summary"] for r in ordered if r.get("status") == "succeeded" and r.get("summary")]
    if json_output:
        out.write(json.dumps(summaries, indent=2) + "\n")
    elif summaries:
        out.write("\n" + format_simulation(summaries, _title(document, experiment)))
    problems = [r for r in ordered if r.get("status") != "succeeded"]
    for run in problems:
        reason = run.get("error") or run.get("status")
        err.write(f"error: run {run.get('id')} ({names.get(int(run.get('id', 0)), '?')}) {run.get('status')}: {reason}\n")
    out.write(f"\nreport: {report}\n")
    out.flush()
    return 1 if problems else 0




def _run_policy(run: dict) -> str:
    policy = run.get("policy", run.get("policy_name"))
    if isinstance(policy, dict):
        policy = policy.get("name")
    return str(policy) if policy else "?"


def _title(document: dict, experiment: dict) -> str | None:
    """``Scenario 'seed': 2 VMs on a 6,144 MB host, 120 s simulated, seed 42`` from what the
    server stored (its snapshot), else from the document."""
    snapshot = experiment.get("scenario") if isinstance(experiment.get("scenario"), dict) else document
    name = experiment.get("name") or snapshot.get("name") or document.get("name")
    vms = snapshot.get("vms") if isinstance(snapshot.get("vms"), list) else document.get("vms") or []
    host = snapshot.get("host") if isinstance(snapshot.get("host"), dict) else {}
    parts = [f"{len(vms)} VM{'s' if len(vms) != 1 else ''}" + (f" on a {host['memory_mb']:,} MB host"
                                                               if isinstance(host.get("memory_mb"), int) else "")]
    duration = experiment.get("duration_s", snapshot.get("duration_s"))
    if isinstance(duration, (int, float)):
        parts.append(f"{duration:g} s simulated")
    seed = experiment.get("seed", snapshot.get("seed"))
    if seed is not None:
        parts.append(f"seed {seed}")
    return f"Scenario {name!r}: " + ", ".join(parts) + f" (experiment {experiment.get('id')})"


class RunsProgress:
    """The progress of several runs on stderr: one line rewritten in place on a terminal
    (``[static done] [esx  42%] [kvm queued]``); on a pipe, a line per run at each 10% and when
    it finishes."""

    def __init__(self, ids: Sequence[int], names: dict[int, str], stream: TextIO, enabled: bool = True):
        self.ids, self.names, self.stream, self.enabled = list(ids), names, stream, enabled
        self.state: dict[int, tuple[str, int]] = {i: ("queued", 0) for i in ids}
        self.shown: dict[int, tuple[str, int]] = {}
        self.started: dict[int, float] = {}
        isatty = getattr(stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self.dirty = False

    def update(self, run_id: int, run: dict) -> None:
        status = str(run.get("status") or "?")
        try:
            percent = int(min(max(float(run.get("progress") or 0.0), 0.0), 1.0) * 100)
        except (TypeError, ValueError):
            percent = 0
        if status == "running":
            self.started.setdefault(run_id, time.monotonic())
        self.state[run_id] = (status, percent)
        if not self.enabled:
            return
        if self.interactive:
            cells = [self._cell(i) for i in self.ids]
            self.stream.write("\r" + " ".join(cells) + "\x1b[K")
            self.stream.flush()
            self.dirty = True
            return
        before = self.shown.get(run_id)
        label = self.names.get(run_id, str(run_id))
        if status in FINISHED_STATUSES:
            if before is None or before[0] != status:
                took = self._took(run_id, run)
                self.stream.write(f"[{label}] {status}{took}\n")
        elif status == "running":
            if before is None or before[0] != "running" or percent >= before[1] + 10:
                self.stream.write(f"[{label}] {percent:3d}%\n")
            else:
                return
        elif before is None or before[0] != status:
            self.stream.write(f"[{label}] {status}\n")
        else:
            return
        self.shown[run_id] = (status, percent)
        self.stream.flush()

    def _cell(self, run_id: int) -> str:
        status, percent = self.state[run_id]
        label = self.names.get(run_id, str(run_id))
        if status == "running":
            return f"[{label} {percent:3d}%]"
        if status == "succeeded":
            return f"[{label} done]"
        return f"[{label} {status}]"

    def _took(self, run_id: int, run: dict) -> str:
        wall = run.get("wall_s")
        if isinstance(wall, (int, float)):
            return f" in {wall:.1f} s"
        if run_id in self.started:
            return f" in {time.monotonic() - self.started[run_id]:.1f} s"
        return ""

    def end(self) -> None:
        if self.enabled and self.interactive and self.dirty:
            self.stream.write("\n")
            self.stream.flush()
            self.dirty = False


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
    sim.add_argument("--series", action="store_true",
                     help="with --json: add each run's per-epoch series and events (as the API serves them)")
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

    add_service_commands(commands)
    return parser


def add_service_commands(commands: Any) -> None:
    from .client import DEFAULT_URL

    dbp = commands.add_parser("db", help="database maintenance (migrations)",
                              description="Maintain the database named by DATABASE_URL (default: SQLite "
                                          "in VMEMLAB_DATA_DIR).")
    db_commands = dbp.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", help="migrate the database to the latest revision (Alembic head)")
    upgrade.set_defaults(run=command_db_upgrade)

    tokens = commands.add_parser(
        "tokens", help="API tokens: create, list, revoke",
        description="Bearer tokens of the API, in the database named by DATABASE_URL. Writes need a token "
                    "(role write or admin); registering, enabling and disabling plugins needs role admin. "
                    "Only a hash is stored: a token is shown once, when it is created.")
    token_commands = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = token_commands.add_parser("create", help="create a token and print it (only now) on stdout")
    create.add_argument("--name", required=True, help="who or what uses it, e.g. alice or ci")
    create.add_argument("--role", choices=("write", "admin"), default="write",
                        help="write (default): experiments, hosts, templates, traces, runs; admin: also plugins")
    create.set_defaults(run=command_tokens_create)
    listing = token_commands.add_parser("list", help="list tokens (their first characters, never the whole token)")
    listing.add_argument("--all", action="store_true", help="revoked ones too")
    listing.set_defaults(run=command_tokens_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token for good")
    revoke.add_argument("token", metavar="ID|NAME|PREFIX|TOKEN", help="the token's id, name, listed prefix, or itself")
    revoke.set_defaults(run=command_tokens_revoke)

    def web_options(p: argparse.ArgumentParser, loglevel: str) -> None:
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                                                           "0.0.0.0 for every interface)")
        p.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
        p.add_argument("--workers", type=_positive_int, default=None,
                       help="API worker processes (default: 2 per core, 2 to 8)")
        p.add_argument("--threads", type=_positive_int, default=4, help="threads per API worker process (default 4)")
        p.add_argument("--loglevel", default=loglevel, type=str.lower, choices=LOG_LEVELS,
                       help=f"log level (default {loglevel})")

    serve = commands.add_parser(
        "serve", help="serve the HTTP API (gunicorn), after migrating the database",
        description="Migrate the database to the latest revision, then serve the API with gunicorn "
                    "(gthread workers). Stop with SIGTERM or Ctrl-C.")
    web_options(serve, "info")
    serve.add_argument("--no-upgrade", action="store_true", help="do not migrate the database first")
    serve.add_argument("--access-log", action="store_true", help="log every request on stdout")
    serve.set_defaults(run=command_serve)

    worker = commands.add_parser(
        "worker", help="run a Celery worker that simulates queued runs",
        description="Run a Celery worker for service.celery_app (the broker is REDIS_URL, else the "
                    "embedded SQLite broker in VMEMLAB_DATA_DIR). It replaces this process.")
    worker.add_argument("--concurrency", type=_positive_int, default=None,
                        help="simulations at once, one process each (default: one per core)")
    worker.add_argument("--loglevel", default="info", type=str.lower, choices=LOG_LEVELS)
    worker.add_argument("--hostname", default=None, help="Celery node name, e.g. sim1@%%h (default celery@%%h)")
    worker.add_argument("--queues", default=None, help="queues to consume, comma-separated (default: VMEMLAB_QUEUE)")
    worker.add_argument("--quiet", action="store_true", help="no start-up banner")
    worker.set_defaults(run=command_worker)

    up = commands.add_parser(
        "up", help="the whole service on this machine: migrate, start the API and a worker",
        description="Migrate the database, start the API and a Celery worker as child processes, "
                    "print their URLs, optionally submit scenarios and print their comparison, and "
                    "serve until stopped (Ctrl-C or SIGTERM stops both). With no configuration it "
                    "uses SQLite and an embedded broker in VMEMLAB_DATA_DIR (default ./var).")
    web_options(up, "warning")
    up.add_argument("--concurrency", type=_positive_int, default=None,
                    help="the worker's simulations at once (default: one per core)")
    up.add_argument("--submit", action="append", metavar="SCENARIO.json",
                    help="once the service answers, submit this scenario, wait for its runs and print "
                         "the comparison; repeat for several")
    up.add_argument("--policy", action="append", metavar="NAME",
                    help="with --submit: policy to run instead of the scenario's list; repeat for several")
    up.add_argument("--param", action="append", metavar="NAME.KEY=VALUE", help="with --submit: set a policy parameter")
    up.add_argument("--quiet", action="store_true", help="no run progress on stderr")
    up.add_argument("--start-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    up.add_argument("--exit-status", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(run=command_up)

    submit = commands.add_parser(
        "submit", help="submit a scenario to a running service over HTTP",
        description="POST a scenario to the API as an experiment (one run per policy). With --wait, "
                    "show the runs' progress, then print their comparison; always prints the report URL.")
    submit.add_argument("scenario", metavar="SCENARIO.json")
    submit.add_argument("--url", default=os.environ.get("VMEMLAB_URL") or DEFAULT_URL,
                        help=f"the service (default $VMEMLAB_URL or {DEFAULT_URL})")
    submit.add_argument("--token", default=os.environ.get("VMEMLAB_TOKEN"),
                        help="bearer token (default $VMEMLAB_TOKEN; vmemlab tokens create makes one)")
    submit.add_argument("--policy", action="append", metavar="NAME",
                        help="policy to run instead of the scenario's list; repeat to compare several")
    submit.add_argument("--param", action="append", metavar="NAME.KEY=VALUE",
                        help="set a policy parameter (VALUE is read as JSON if it parses)")
    submit.add_argument("--wait", action="store_true", help="wait for the runs and print the comparison")
    submit.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="with --wait: give up waiting after this long (the runs go on)")
    submit.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    submit.add_argument("--json", action="store_true", help="with --wait: print the run summaries as JSON")
    submit.add_argument("--quiet", action="store_true", help="no progress on stderr")
    submit.set_defaults(run=command_submit)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1 to 65535)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


# ScenarioError and TraceError can also come from inside a run (a scenario built past the schema,
# a trace file that changed since the scenario was checked): still the user's input, no traceback.
USER_ERRORS = (UsageError, ScenarioValidationError, ScenarioError, TraceError, UnknownPolicyError,
               BrokenPolicyError, PolicyParameterError, SettingsError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help, or argparse's own usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .client import APIError

    try:
        return args.run(args, sys.stdout, sys.stderr)
    except USER_ERRORS as exc:
        for line in _error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except APIError as exc:            # the server's answer: 4xx is the request's mistake
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE if exc.client_error else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


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
