"""The API fuzz tests (tests/api/test_fuzz.py, and test_fuzz_postgresql.py when a PostgreSQL server is
reachable) with many more examples per operation, and a summary.

Schemathesis generates requests for every operation of /api/v1/openapi.json (valid and invalid
input) against an in-process application on a seeded SQLite database (and a seeded PostgreSQL
one: PostgreSQL refuses text SQLite stores) and the embedded broker, and
fails on any 5xx, any response whose body, status or content type the document does not allow, and
any documented (operation, status) never answered. Then schemathesis' stateful phase follows the
document's OpenAPI links (service/api/links.py) through sequences of calls, each on a fresh copy of
the seeded database, and fails on any 5xx, any undocumented answer and any operation with a path
parameter never answered about a resource that exists. CI runs the same tests with 25 examples per
operation and batches of 100 scenarios; this runs ``--examples`` (default 500) and ``--scenarios`` (default
1000) and prints requests per operation and status, and per database the statuses each operation
answered in the stateful phase (the operations reached). Every generated request carries an admin token.

Run:  .venv/bin/python bench/fuzz.py [--examples 500] [--scenarios 1000] [-- extra pytest arguments]
In-process only: no server, no network.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="examples per operation (default 500)")
    parser.add_argument("--scenarios", type=int, default=1000, help="stateful scenarios per batch and database (default 1000)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmemlab-fuzz-") as folder:
        summary_path = Path(folder) / "summary.json"
        env = {**os.environ, "VMEMLAB_FUZZ_EXAMPLES": str(args.examples), "VMEMLAB_FUZZ_SUMMARY": str(summary_path),
               "VMEMLAB_FUZZ_SCENARIOS": str(args.scenarios), "VMEMLAB_FUZZ_REACH": folder}
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "tests/api/test_fuzz.py", "tests/api/test_fuzz_postgresql.py", *args.pytest_args],
                                cwd=ROOT, env=env)
        elapsed = time.monotonic() - start
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
        reached = {path.stem.removeprefix("reach-"): json.loads(path.read_text())
                   for path in sorted(Path(folder).glob("reach-*.json"))}
    print(f"\nschemathesis, {args.examples} examples per operation, {args.scenarios} stateful scenarios: "
          f"{elapsed:.0f} s, pytest exit {result.returncode}")
    for database, reach in reached.items():
        print(f"stateful phase on {database}: statuses per operation")
        width = max(len(op) for op in reach["operations"])
        for operation, statuses in reach["operations"].items():
            print(f"  {operation:<{width}}  " + " ".join(str(s) for s in statuses))
        unreached = reach["unreached"]
        print(f"  never reached with a real id: {', '.join(unreached) if unreached else 'none'}")
    if summary is None:
        print("no summary (the status coverage test did not run)")
        return result.returncode or 1
    print(f"{summary['requests']} requests")
    width = max(len(op) for op in summary["operations"])
    for operation, statuses in summary["operations"].items():
        print(f"  {operation:<{width}}  " + "  ".join(f"{s}x{n}" for s, n in statuses.items()))
    never = summary["never_returned"]
    print(f"documented statuses never returned: {', '.join(never) if never else 'none'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
