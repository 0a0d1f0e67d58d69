"""The ``vmemlab`` command line: simulate a scenario under one or more policies, sweep it over a
grid of values, compute miss counts of a recorded trace, list installed policies; and run the
service: migrate its database (``db upgrade``), serve the API (``serve``), run a Celery worker
(``worker``), both together on one machine (``up``), and submit a scenario or a sweep to a
running service over HTTP (``submit``).

User mistakes (a bad scenario, an unknown policy, a malformed trace, a missing file) are printed
as ``error: ...`` lines on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from ..engine import ScenarioError
from ..engine.config import REPLACEMENTS
from ..engine.traces import TraceError
from ..policies import BrokenPolicyError, UnknownPolicyError
from ..scenario import ScenarioValidationError
from ..sdk import PolicyParameterError
from ..settings import SettingsError
from .admin import command_db_upgrade, command_tokens_create, command_tokens_list, command_tokens_revoke
from .capacity import command_capacity
from .common import EXIT_USAGE, LOG_LEVELS, UsageError, _parameter_problems, _port, _positive_int
from .mrc import command_mrc, frames_for, parse_frames
from .plugins import command_plugins, command_plugins_new
from .serve import command_serve, command_up, command_worker
from .simulate import ProgressLine, command_simulate, format_simulation
from .submit import command_submit
from .sweep import command_sweep
from .trace import add_trace_commands

__all__ = ["ProgressLine", "build_parser", "format_simulation", "frames_for", "main", "parse_frames"]


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
    policy_options(sim)
    sim.add_argument("--json", action="store_true", help="print the run summaries as a JSON list")
    sim.add_argument("--series", action="store_true",
                     help="with --json: add each run's per-epoch series and events (as the API serves them)")
    sim.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sim.add_argument("--jobs", type=_positive_int, default=None,
                     help="run the policies in this many parallel processes (default: one per core); the results "
                          "are the same whatever the number")
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

    add_trace_commands(commands)

    capacity = commands.add_parser(
        "capacity", help="how many copies of one VM fit on the host under each policy, at an SLA",
        description="For each policy, the most copies of --vm that run with every VM admitted, none blocked "
                    "past --max-blocked of its time and every VM's slowdown at most --sla; the scenario's "
                    "other VMs stay. Searches by doubling then bisection, one simulation per probe; the "
                    "policies run in parallel processes.")
    capacity.add_argument("scenario", metavar="SCENARIO.json")
    capacity.add_argument("--vm", required=True, metavar="NAME", help="the VM to replicate (a name in the scenario)")
    capacity.add_argument("--sla", required=True, type=float, metavar="MAX_SLOWDOWN",
                          help="the worst slowdown any VM may have, e.g. 1.2")
    capacity.add_argument("--min-fairness", type=float, default=None, help="also: Jain fairness at least this")
    capacity.add_argument("--max-blocked", type=float, default=0.05,
                          help="share of its running time a VM may wait blocked (default 0.05)")
    capacity.add_argument("--max-count", type=_positive_int, default=256, help="upper bound of the search (default 256)")
    policy_options(capacity)
    capacity.add_argument("--jobs", type=_positive_int, default=None, help="parallel processes (default: one per core)")
    capacity.add_argument("--json", action="store_true", help="the results as JSON, one object per policy")
    capacity.add_argument("--quiet", action="store_true", help="no probe lines on stderr")
    capacity.set_defaults(run=command_capacity)

    sweep = commands.add_parser(
        "sweep", help="run a scenario at every point of a grid of values, under each policy",
        description="Set fields of the scenario along axes and run every point of the axes' cartesian "
                    "product (the first axis varying slowest) under each policy: one simulation per point "
                    "and policy, in parallel processes, every point checked before any run. An axis path "
                    "names a field as the document writes it: host.memory_mb, vms[web].count (a VM entry "
                    "by name, or vms[0] by position), vms[web].workload.phases[0].footprint_mb, "
                    "policies[esx].params.idle_tax_pct (the policies run, --policy or the scenario's).")
    sweep.add_argument("scenario", metavar="SCENARIO.json")
    axis_option(sweep)
    policy_options(sweep)
    sweep.add_argument("--jobs", type=_positive_int, default=None, help="parallel processes (default: one per core)")
    sweep.add_argument("--json", action="store_true", help="one JSON object per point and policy: point, policy, "
                                                           "params, status, error, metrics")
    sweep.add_argument("--quiet", action="store_true", help="no line per finished run on stderr")
    sweep.set_defaults(run=command_sweep)

    plugins = commands.add_parser("plugins", help="list installed policies and their parameters; "
                                                  "'plugins new NAME' starts a new one")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(run=command_plugins)
    plugin_commands = plugins.add_subparsers(dest="plugins_command", metavar="ACTION")
    new = plugin_commands.add_parser(
        "new", help="write a new policy distribution (pyproject with the entry point, policy, contract tests)",
        description="Write the distribution vmemlab-NAME, laid out like examples/third-party-policy: its "
                    "contract tests pass as generated.")
    new.add_argument("name", metavar="NAME", help="the policy's name: letters, digits, '-' and '_'")
    new.add_argument("--dir", default=".", help="where to create the folder vmemlab-NAME (default: here)")
    new.set_defaults(run=command_plugins_new)

    add_service_commands(commands)
    return parser


def policy_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--policy and --param, as every command that runs policies takes them."""
    parser.add_argument("--policy", action="append", metavar="NAME",
                        help=f"{prefix}policy to run instead of the scenario's list; repeat for several")
    parser.add_argument("--param", action="append", metavar="NAME.KEY=VALUE",
                        help=f"{prefix}set a policy parameter (VALUE is read as JSON if it parses, else as a string)")


def axis_option(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument("--axis", action="append", metavar="PATH=V1,V2,...|PATH=START:STOP:STEP",
                        help=f"{prefix}a field to vary and its values (stop included when a step lands on it), "
                             "e.g. host.memory_mb=4096,6144 or vms[web].count=1:8:1; values are read as JSON "
                             "if they parse, else as strings; repeat for several axes")


def add_service_commands(commands: Any) -> None:
    from ..client import DEFAULT_URL

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
                       help="API worker processes (default: 1 per core, 2 to 8)")
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
    policy_options(up, "with --submit: ")
    up.add_argument("--quiet", action="store_true", help="no run progress on stderr")
    up.add_argument("--start-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    up.add_argument("--exit-status", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(run=command_up)

    submit = commands.add_parser(
        "submit", help="submit a scenario to a running service over HTTP",
        description="POST a scenario to the API as an experiment (one run per policy), or with --sweep "
                    "as a sweep (one run per point of the --axis grid and policy). With --wait, show the "
                    "runs' progress, then print their comparison; always prints the report URL.")
    submit.add_argument("scenario", metavar="SCENARIO.json")
    submit.add_argument("--url", default=os.environ.get("VMEMLAB_URL") or DEFAULT_URL,
                        help=f"the service (default $VMEMLAB_URL or {DEFAULT_URL})")
    submit.add_argument("--token", default=os.environ.get("VMEMLAB_TOKEN"),
                        help="bearer token (default $VMEMLAB_TOKEN; vmemlab tokens create makes one)")
    policy_options(submit)
    submit.add_argument("--sweep", action="store_true",
                        help="submit a sweep over the --axis values (POST /api/v1/sweeps) instead of an experiment")
    axis_option(submit, "with --sweep: ")
    submit.add_argument("--wait", action="store_true", help="wait for the runs and print the comparison")
    submit.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="with --wait: give up waiting after this long (the runs go on)")
    submit.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    submit.add_argument("--json", action="store_true", help="with --wait: print the run summaries as JSON")
    submit.add_argument("--quiet", action="store_true", help="no progress on stderr")
    submit.set_defaults(run=command_submit)


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
    from ..client import APIError

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

