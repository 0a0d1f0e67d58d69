"""``vmemlab submit``: a scenario posted to a running service over HTTP, its runs followed, their comparison
printed; with ``--sweep``, the scenario and a grid of axes posted as a sweep, its results printed as
``vmemlab sweep`` prints them."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from ..client import FINISHED as FINISHED_STATUSES
from .common import UsageError
from .progress import ProgressLine, RunsProgress
from .simulate import choose_policies, format_simulation, parse_param_overrides


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
        document["policies"] = choose_policies(cli_policies, listed_policies(document), overrides)
    return document


def listed_policies(document: dict) -> list[dict]:
    """The document's own policy entries that name one (the server or the schema judges the rest)."""
    listed = document.get("policies") if isinstance(document.get("policies"), list) else []
    return [p for p in listed if isinstance(p, dict) and "name" in p]


def _sweep_submission(path: str, axes: Sequence[str], cli_policies: Sequence[str], params: Sequence[str]) -> dict:
    """The body of ``POST /sweeps``: the file as it is, the axes with their values spelled out,
    and the policies only when ``--policy`` or ``--param`` chose them (else the scenario's apply)."""
    from .sweep import parse_axes      # here: sweep.py imports this module

    parsed = parse_axes(axes)
    document = _read_document(path)
    body = {"name": document.get("name") or Path(path).stem, "scenario": document,
            "axes": [{"path": axis.path, "values": list(axis.values)} for axis in parsed]}
    overrides = parse_param_overrides(params)
    if cli_policies or overrides:
        body["policies"] = choose_policies(cli_policies, listed_policies(document), overrides)
    return body


def command_submit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..client import Client

    if args.axis and not args.sweep:
        raise UsageError("--axis needs --sweep: an experiment has no axes")
    if args.sweep:
        body = _sweep_submission(args.scenario, args.axis or [], args.policy or [], args.param or [])
    else:
        document = _submission(args.scenario, args.policy or [], args.param or [])
    try:
        client = Client(args.url, token=args.token)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None
    try:
        if args.sweep:
            return submit_sweep(client, body, out, err, wait=args.wait, quiet=args.quiet,
                                timeout_s=args.timeout, json_output=args.json, poll_s=args.poll)
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
    from ..client import run_ids

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
    try:
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
    finally:   # an error or Ctrl-C must not leave the display half drawn, the cursor hidden
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


def submit_sweep(client: Any, body: dict, out: TextIO, err: TextIO, *, wait: bool, quiet: bool = False,
                 timeout_s: float | None = None, json_output: bool = False, poll_s: float = 0.5) -> int:
    """POST the body as a sweep; with ``wait``, follow it to the end and print its results as
    ``vmemlab sweep`` does. 0 if every run succeeded (or not waiting), 1 if not."""
    from .sweep import format_sweep

    sweep = client.create_sweep(body)
    sweep_id = int(sweep["id"])
    links = sweep.get("links") or {}
    report = client.link_url(links.get("report") or f"/sweeps/{sweep_id}/report")
    total = sweep.get("runs_total")
    out.write(f"sweep {sweep_id}: {total if total is not None else '?'} runs, {len(body['axes'])} "
              f"ax{'es' if len(body['axes']) != 1 else 'is'}\n")
    out.flush()
    if not wait:
        out.write(f"report: {report}\n")
        return 0

    progress = ProgressLine(f"sweep {sweep_id}", err, enabled=not quiet)
    started = time.monotonic()
    try:
        while True:
            progress(_fraction(sweep.get("progress")))
            if sweep.get("status") in FINISHED_STATUSES:
                break
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                progress.abandon()
                err.write(f"error: the runs did not finish within {timeout_s:g} s; they go on on the server: {report}\n")
                return 1
            time.sleep(poll_s)
            sweep = client.sweep(sweep_id)
    except BaseException:
        progress.abandon()
        raise
    progress.finish()
    status = sweep.get("status")
    if not quiet:
        counts = ", ".join(f"{n} {s}" for s, n in (sweep.get("runs_by_status") or {}).items() if n)
        err.write(f"sweep {sweep_id} {status}" + (f": {counts}" if counts else "") + "\n")
    rows = client.sweep_results({**sweep, "links": sweep.get("links") or links})
    if json_output:
        out.write(json.dumps(rows, indent=2) + "\n")
    elif rows:
        out.write("\n" + format_sweep(rows, [axis["path"] for axis in body["axes"]]))
    out.write(f"\nreport: {report}\n")
    out.flush()
    return 0 if status == "succeeded" and all(r.get("status") == "succeeded" for r in rows) else 1


def _fraction(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


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
