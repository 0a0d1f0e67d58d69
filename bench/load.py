"""Load test: concurrent reads and writes against the full stack while the workers simulate.
Prints figures per operation; exits 1 on any error or lost run.

1. Starts the full stack on loopback (or, with ``--url URL --token T``, drives a running service):
   a scratch PostgreSQL database (``vmemlab_load_<pid>``, migrated with ``vmemlab db upgrade``,
   dropped at the end), Redis (a database of its own, ``--redis-url``, default
   ``redis://127.0.0.1:6379/14``, flushed before and after), the API (``vmemlab serve``: gunicorn)
   on a free port and ``--workers`` Celery workers (``vmemlab worker --concurrency 1`` each), all
   with DATABASE_URL, REDIS_URL and VMEMLAB_DATA_DIR set (``--serve-migrates``: ``vmemlab serve``
   migrates itself, as docker-compose's api does). If ``vmemlab tokens`` exists, an admin token is
   created with it and sent on every request.
2. Warms up: waits until every worker answers the health endpoint's ping and one small
   experiment has run.
3. Drives ``--clients`` threads (one keep-alive http.client connection each, back to back unless
   ``--think-ms``) for ``--seconds`` through a mix of operations: reads (runs lists with filters
   and sorts, run polling, an experiment, comparisons, series, health, hosts) and writes (small
   experiments, a third with an Idempotency-Key, some replayed and some sent twice at once; hosts
   and VM templates created and patched with If-Match, some deliberately stale; cancellations).
   Experiments are posted at most ``--submit-rate`` per second and not while ``--max-backlog``
   runs are unfinished, so that the workers can keep up and the end is bounded. ``--clients
   4,16,32`` runs one phase per figure on the same stack.
4. Per operation and overall: count, throughput, p50/p99/max latency (of every answer), the
   expected 4xx (412 on a stale If-Match, 409 cancelling a finished run) and the errors: 5xx,
   unexpected 4xx, and connection errors (refused, reset, timeout).
5. Waits (``--drain-timeout``) for every run it created to finish, then checks them against
   what the API lists: each created run listed under its experiment and in a final state, none
   missing, none extra, none failed (the scenarios are valid), cancelled only where a
   cancellation was accepted (202), one experiment per Idempotency-Key; on its own stack also
   that the API lists no other run and that no worker stored a result twice (the workers' logs;
   the tracebacks and ERROR lines of every process's log are printed).

Run:  .venv/bin/python bench/load.py [--clients 16] [--seconds 30] [--workers 2]
      .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --token "$VMEMLAB_TOKEN"
Loopback only; every loop is bounded by a deadline; every process it starts is stopped at the
end (also on Ctrl-C or an error) and the scratch database dropped.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Optional

from api_client import Connection, percentile
from api_store import tiny
from load_client import Client, phase, report
from load_stack import Stack, get_json, list_all, wait_health
from load_world import API, DEFAULT_POSTGRES, DEFAULT_REDIS, FAST_POLICIES, FINAL, HOST_SPEC, World



def drain(url: str, auth: dict, world: World, timeout: float) -> tuple[float, int]:
    """Poll every experiment with unfinished runs until all are final or the time is up;
    (seconds waited, runs still unfinished)."""
    conn = Connection(url, timeout=30)
    start = time.monotonic()
    deadline = start + timeout
    shown = start
    while True:
        with world.lock:
            pending_experiments = sorted({e.id for e in world.experiments.values()
                                          for r in e.runs if world.status.get(r) not in FINAL})
        if not pending_experiments or time.monotonic() >= deadline:
            break
        for experiment in pending_experiments:
            if time.monotonic() >= deadline:
                break
            status, data, _ = get_json(conn, f"/experiments/{experiment}", auth)
            if status == 200 and isinstance(data, dict):
                for run in data.get("runs") or []:
                    world.seen(run)
        if time.monotonic() - shown >= 10:
            shown = time.monotonic()
            print(f"  ... {world.backlog()} runs unfinished after {shown - start:.0f} s")
        time.sleep(0.5)
    conn.close()
    return time.monotonic() - start, world.backlog()


def verify(url: str, auth: dict, world: World, own_stack: bool, timeout: float = 300.0) -> list[str]:
    """Compare what the API lists with what was created; the problems found (empty: none)."""
    conn = Connection(url, timeout=30)
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    counts = collections.Counter()
    attempts_over_1 = []
    cancelled_ok = succeeded_despite_cancel = 0
    listed_total = 0
    for created in sorted(world.experiments.values(), key=lambda e: e.id):
        listed = list_all(conn, f"/runs?experiment_id={created.id}&sort=id", auth, deadline)
        if listed is None:
            problems.append(f"experiment {created.id}: its runs could not be listed")
            continue
        listed_total += len(listed)
        by_id = {r["id"]: r for r in listed}
        for run_id in created.runs:
            run = by_id.get(run_id)
            if run is None:
                problems.append(f"experiment {created.id}: run {run_id} was created but is not listed (lost)")
                counts["lost"] += 1
                continue
            status = run.get("status")
            counts[status] += 1
            if status not in FINAL:
                problems.append(f"run {run_id}: still {status} (progress {run.get('progress')}) after the drain")
            elif status == "failed":
                problems.append(f"run {run_id} ({run.get('policy_name')}) failed: {run.get('error')}")
            elif status == "cancelled" and run_id not in world.cancel_accepted:
                problems.append(f"run {run_id}: cancelled, but no cancellation was asked for")
            elif status == "cancelled":
                cancelled_ok += 1
            elif status == "succeeded" and run_id in world.cancel_accepted:
                succeeded_despite_cancel += 1
            if (run.get("attempts") or 0) > 1:
                attempts_over_1.append(f"{run_id} ({run.get('attempts')} attempts)")
        extra = sorted(set(by_id) - set(created.runs))
        if extra:
            problems.append(f"experiment {created.id}: runs {extra} listed but never created")
            counts["extra"] += len(extra)
    duplicates = 0
    for created in list(world.keyed):
        same = list_all(conn, f"/experiments?name={urllib.parse.quote(created.name)}", auth, deadline)
        if same is None:
            problems.append(f"experiments named {created.name}: could not be listed")
        elif len(same) != 1:
            duplicates += 1
            problems.append(f"key {created.key}: {len(same)} experiments named {created.name} "
                            f"({sorted(e.get('id') for e in same)}): the key did not make it one")
    total_listed = None
    if own_stack:
        status, data, headers = get_json(conn, "/runs?page_size=1", auth)
        if status == 200 and headers is not None:
            total_listed = int(json.loads(headers.get("X-Pagination") or "{}").get("total", -1))
            created_runs = sum(len(e.runs) for e in world.experiments.values())
            if total_listed != created_runs:
                problems.append(f"the API lists {total_listed} runs in all, {created_runs} were created here"
                                + (f" ({len(world.unknown_posts)} POSTs got no answer: they may have created "
                                   "experiments)" if world.unknown_posts else ""))
    conn.close()
    created_runs = sum(len(e.runs) for e in world.experiments.values())
    print(f"  created:   {len(world.experiments)} experiments, {created_runs} runs "
          f"({len(world.keyed)} experiments with an Idempotency-Key; {len(world.cancel_accepted)} cancellations "
          f"accepted)")
    print(f"  listed:    {listed_total} runs under those experiments"
          + (f"; {total_listed} runs in all on this stack" if total_listed is not None else ""))
    print("  final:     " + ", ".join(f"{counts[s]} {s}" for s in FINAL)
          + f"; not final {sum(v for k, v in counts.items() if k not in FINAL + ('lost', 'extra'))}"
          + f"; lost {counts['lost']}; extra {counts['extra']}; duplicate experiments per key {duplicates}")
    print(f"  cancelled: {cancelled_ok} of {len(world.cancel_accepted)} accepted cancellations ended cancelled, "
          f"{succeeded_despite_cancel} finished first (succeeded: the cancel reached a run in its last heartbeat)")
    if attempts_over_1:
        print(f"  re-run:    {len(attempts_over_1)} runs took more than one attempt: {', '.join(attempts_over_1[:10])}")
    if world.unknown_posts:
        print(f"  unknown:   {len(world.unknown_posts)} POSTs of an experiment got no answer")
    return problems


def check_logs(logs: dict, world: World) -> list[str]:
    """Every result stored once, by the workers' own account; the tracebacks and errors they logged."""
    problems: list[str] = []
    results_twice = sorted(r for r, n in logs["succeeded"].items() if n > 1)
    ours = {r for e in world.experiments.values() for r in e.runs}
    stored = set(logs["succeeded"])
    print(f"  workers:   {sum(logs['attempts'].values())} attempts, {len(stored)} results stored, "
          f"{sum(logs['skipped'].values())} deliveries not claimed (already finished or cancelled); "
          f"results stored twice: {len(results_twice)}")
    if results_twice:
        problems.append(f"runs whose result a worker stored more than once: {results_twice[:20]}")
    unknown = sorted(stored - ours)
    if unknown:
        problems.append(f"workers stored results of runs never created here: {unknown[:20]}")
    if logs["tracebacks"]:
        print(f"  logs:      {len(logs['tracebacks'])} tracebacks, {len(logs['errors'])} ERROR lines")
        for name, text in logs["tracebacks"][:3]:
            print(f"  --- {name}:\n" + "\n".join("    " + line for line in text.splitlines()))
    elif logs["errors"]:
        print(f"  logs:      {len(logs['errors'])} ERROR lines")
    for name, line in logs["errors"][:5]:
        print(f"    {name}: {line}")
    return problems


# --- main ---------------------------------------------------------------------------------------------

def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running service on loopback (default: start the full stack here)")
    parser.add_argument("--token", default=os.environ.get("VMEMLAB_TOKEN"),
                        help="with --url: a bearer token with the write (or admin) role (default $VMEMLAB_TOKEN)")
    parser.add_argument("--clients", default="16",
                        help="concurrent clients; a comma-separated list runs one phase each (default 16)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per phase (default 30)")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="mean wait of each client between requests (default 0: back to back)")
    parser.add_argument("--submit-rate", type=float, default=2.0,
                        help="experiments posted per second at most, all clients together (default 2)")
    parser.add_argument("--max-backlog", type=int, default=12,
                        help="no experiment is posted while this many of its runs are unfinished (default 12)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take (default 30)")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="seconds to wait at the end for the runs to finish (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes started (default 2)")
    parser.add_argument("--worker-concurrency", type=int, default=1,
                        help="simulations at once per worker (default 1: two workers, one per core)")
    parser.add_argument("--api-workers", type=int, default=None,
                        help="gunicorn worker processes (default: vmemlab serve's, one per core)")
    parser.add_argument("--api-threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    parser.add_argument("--serve-migrates", action="store_true",
                        help="start `vmemlab serve` without --no-upgrade, as docker-compose's api does (it then "
                             "migrates and looks for tokens itself before forking its workers)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES,
                        help=f"PostgreSQL admin URL; the scratch database is created beside it (default {DEFAULT_POSTGRES})")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS,
                        help=f"Redis URL with a database number of its own: flushed before and after (default {DEFAULT_REDIS})")
    parser.add_argument("--env", action="append", metavar="NAME=VALUE",
                        help="an extra environment variable for the started processes (repeatable)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the clients (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) even without errors")
    args = parser.parse_args(argv)
    try:
        phases = [min(max(int(c), 1), 512) for c in str(args.clients).split(",") if c.strip()]
    except ValueError:
        parser.error(f"--clients {args.clients!r}: expected numbers, e.g. 16 or 4,16,32")
    args.seconds = min(max(args.seconds, 1.0), 3600.0)
    args.drain_timeout = min(max(args.drain_timeout, 1.0), 3600.0)
    args.workers = min(max(args.workers, 1), 16)

    # SIGINT too, even where the shell started this in the background with SIGINT ignored
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    tmp = Path(tempfile.mkdtemp(prefix="vmemlab-load-"))
    stack: Optional[Stack] = None
    stop = threading.Event()
    failed = True
    print(f"cpu:          {os.cpu_count()} logical cores, shared by the load client, the API, the workers, "
          "PostgreSQL and Redis")
    try:
        if args.url:
            url = args.url.rstrip("/")
            if url.endswith(API):
                url = url[: -len(API)]
            token = args.token
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            health = wait_health(url, auth, 30, 0, lambda: True)
            print(f"service:      {url} (health: {health.get('status')}; workers "
                  f"{(health.get('workers') or {}).get('workers')}); token: {'given' if token else 'none'}")
        else:
            stack = Stack(args, tmp)
            stack.flush_redis()
            stack.create_database()
            print(f"stack:        PostgreSQL database {stack.db_name} (scratch), Redis {stack.redis_url} (flushed)")
            stack.start()
            token = stack.token()
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            url = stack.url
            t0 = time.perf_counter()
            health = wait_health(url, auth, 180, args.workers, stack.alive)
            print(f"service:      {url}: API gunicorn, {args.api_workers or 'default'} workers x "
                  f"{args.api_threads} threads; {args.workers} Celery workers x {args.worker_concurrency} "
                  f"(seen: {', '.join(health['workers']['workers'])}); healthy after {time.perf_counter() - t0:.1f} s")
            print(f"token:        {'an admin token from vmemlab tokens create, sent on every request' if token else 'none (this checkout has no `vmemlab tokens`: the API is open)'}")

        if token:
            # the token matters: a write without it is refused
            probe = Connection(url, timeout=args.timeout)
            try:
                status, _, payload = probe.exchange("POST", API + "/hosts", {"name": "load-no-token", "spec": HOST_SPEC})
            finally:
                probe.close()
            print(f"auth:         POST /hosts without the token: {status}"
                  + ("" if status in (401, 403) else f" (expected 401: the API took a write without a token: "
                                                     f"{payload[:200].decode(errors='replace')})"))
        world = World(args.submit_rate, args.max_backlog)
        tag = f"{os.getpid()}-{secrets.token_hex(2)}"
        # warm-up: one experiment under every fast policy, to load the engine in the workers
        warm = Client(0, url, token, world, tag, args.timeout, args.seed)
        doc = tiny(policies=FAST_POLICIES)
        doc["name"] = f"load-{tag}-warmup"
        t0 = time.perf_counter()
        outcome, status, data, _ = warm.call("warm-up", "POST", "/experiments", doc, ok=(201,))
        if outcome != "ok":
            raise SystemExit(f"warm-up POST /experiments: {status}: {data}")
        warm._created(outcome, data, doc, None, "warm-up")
        waited, left = drain(url, auth, world, 180)
        if left:
            raise SystemExit(f"warm-up: {left} runs not finished after {waited:.0f} s")
        print(f"warm-up:      {len(doc['policies'])} tiny runs finished {time.perf_counter() - t0:.1f} s after the POST")
        print(f"mix:          reads: runs lists (filters, sorts), run polling, experiments, comparisons, series, "
              f"health, hosts; writes: experiments (<= {args.submit_rate:g}/s, backlog <= {args.max_backlog} runs; "
              "1/3 with Idempotency-Key, some replayed, some sent twice at once), hosts and templates "
              "(POST, PATCH with If-Match, some stale), cancellations")

        summary = []
        for clients in phases:
            if stack is not None and not stack.alive():
                raise SystemExit("a process of the stack exited: " + ", ".join(
                    f"{p.name} {p.proc.returncode}" for p in stack.processes if not p.alive()))
            backlog = world.backlog()
            totals, wall = phase(url, token, world, tag, clients, args.seconds, args.think_ms, args.timeout, stop,
                                 args.seed + clients)
            pace = f"~{args.think_ms:g} ms between requests" if args.think_ms else "back to back"
            everything = report(f"{clients} clients, {pace}, {args.seconds:g} s (runs unfinished at the start: "
                                f"{backlog}, at the end: {world.backlog()})", totals, wall)
            summary.append((clients, everything, wall))

        print(f"== waiting for the runs (at most {args.drain_timeout:g} s)")
        waited, left = drain(url, auth, world, args.drain_timeout)
        print(f"  {'all finished' if not left else f'{left} runs still unfinished'} after {waited:.1f} s")
        print("== checking what the API lists against what was created")
        problems = verify(url, auth, world, own_stack=stack is not None)
        if stack is not None:
            print("== stopping the stack; what the processes logged")
            stack.stop()               # the workers' logs are complete once they stopped
            problems += check_logs(stack.log_findings(), world)
        for p in problems[:30]:
            print(f"  PROBLEM: {p}")
        if len(problems) > 30:
            print(f"  ... {len(problems) - 30} more")

        print("== summary")
        errors = 0
        for clients, everything, wall in summary:
            n = len(everything.latencies) + everything.connection
            lat = [x * 1000 for x in everything.latencies]
            errors += everything.errors
            print(f"  {clients:>3} clients: {n / wall:7.1f} req/s, p50 {percentile(lat, 50):6.1f} ms, "
                  f"p99 {percentile(lat, 99):7.1f} ms; errors: {everything.server_5xx} 5xx, "
                  f"{everything.unexpected_4xx} unexpected 4xx, {everything.connection} connection; "
                  f"{everything.expected_4xx} expected 4xx")
        clean = [c for c, e, _ in summary if not e.errors]
        print(f"  zero errors at: {', '.join(map(str, clean)) or 'none'} clients; runs: "
              f"{'every run created reached a final state once, none lost' if not problems else f'{len(problems)} problems'}; "
              f"verdict: {'PASS' if not errors and not problems else 'FAIL'}")
        failed = bool(errors or problems)
        return 1 if failed else 0
    except KeyboardInterrupt as exc:
        stop.set()
        print(f"\ninterrupted ({exc or 'Ctrl-C'}): stopping")
        return 130
    finally:
        stop.set()
        if stack is not None:
            if any(p.alive() for p in stack.processes):
                stack.stop()
            try:
                stack.drop_database()
            except Exception as exc:
                print(f"could not drop database {stack.db_name}: {exc}")
                failed = True
            try:
                if stack.flushed_redis:
                    stack.flush_redis()
            except Exception as exc:
                print(f"could not flush {stack.redis_url}: {exc}")
        for s, handler in previous.items():
            signal.signal(s, handler)
        if args.keep or failed:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
