"""``vmemlab trace ...``: record a program's page references (``trace record``), import other
tools' traces (``trace import``) and see what a trace says about itself (``trace info``)."""
from __future__ import annotations

import argparse
import json
import math
import time
from typing import TextIO

from ..engine.shards import DEFAULT_RATE, MIN_SAMPLED_PAGES, check_rate
from ..engine.stack_distance import SAMPLE_ABOVE_REFS, trace_profile
from ..engine.traces import load_trace
from ..tracetools.importers import FORMATS, import_trace
from ..tracetools.lackey import RecordError, record
from .common import Column, UsageError, format_table

# the sizes the text output shows; --json carries the curve at every size
_SHOWN_FRACTIONS = (0.01, 0.05, 0.10, 0.25, 0.50, 1.0)


def add_trace_commands(commands) -> None:
    trace = commands.add_parser(
        "trace", help="record, import and inspect page-reference traces",
        description="Record a program's page references, import other tools' traces, and show a trace's LRU curve; traces are text, gzip text or .npy, as vmemlab mrc reads them.")
    sub = trace.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)
    info = sub.add_parser(
        "info", help="the exact LRU miss-ratio curve at every size, working sets, reuse distances",
        description="One pass over the trace computes every reference's LRU stack distance, which "
                    "gives the exact LRU miss count at every cache size (the same counts as "
                    "vmemlab mrc --replacement lru), the working-set sizes and the reuse-distance "
                    "histogram. A working-set size at 90% is the smallest cache that gets 90% of "
                    "the hits an unbounded cache gets (first references can never hit).")
    info.add_argument("trace", metavar="TRACE")
    info.add_argument("--json", action="store_true",
                      help="print JSON; \"lru_misses\"[i] is the miss count with i+1 frames")
    method = info.add_mutually_exclusive_group()
    method.add_argument("--exact", dest="method", action="store_const", const="exact",
                        help="stack distances of every reference, whatever the trace's length")
    method.add_argument("--sampled", dest="method", action="store_const", const="sampled",
                        help="SHARDS (spatially hashed sampling of the pages) whatever the trace's length")
    info.add_argument("--rate", type=_rate, default=None, metavar="R",
                      help=f"SHARDS sampling rate in (0, 1] (implies --sampled); default {DEFAULT_RATE:g}, "
                           f"raised to keep about {MIN_SAMPLED_PAGES:,} pages")
    info.set_defaults(method="auto")
    info.set_defaults(run=command_trace_info)
    info.epilog = (f"By default traces of more than {SAMPLE_ABOVE_REFS:,} references are sampled (SHARDS, "
                   "docs/traces.md gives its measured error) and shorter ones are exact.")

    rec = sub.add_parser(
        "record", help="run a program under valgrind's lackey and write its page trace",
        description="Run COMMAND under valgrind --tool=lackey --trace-mem=yes (LC_ALL=C, stdin and "
                    "stdout discarded), turn each access into the page of its first byte, number the "
                    "pages densely by first touch and write one id per line to --output, which appears "
                    "only if the command exits with status 0.")
    kind = rec.add_mutually_exclusive_group()
    kind.add_argument("--data-only", dest="instructions", action="store_false",
                      help="loads, stores and modifies only (the default)")
    kind.add_argument("--instructions", dest="instructions", action="store_true",
                      help="instruction fetches too, in program order")
    rec.add_argument("--page-size", type=int, default=4096, help="bytes per page, a power of two (default 4096)")
    rec.add_argument("--output", required=True, metavar="FILE")
    rec.add_argument("--quiet", action="store_true", help="no progress on stderr")
    rec.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    rec.set_defaults(run=command_trace_record, instructions=False)

    imp = sub.add_parser(
        "import", help="convert a libCacheSim oracleGeneral, CSV or text trace to vmemlab's format",
        description="oracle-general: libCacheSim's 24-byte records (uint32 time, uint64 obj_id, uint32 "
                    "obj_size, int64 next access), one page per request, sizes ignored unless --object-sizes. "
                    "csv/text: the object id is field --column (from 1). With object sizes, a request for "
                    "S bytes touches the first ceil(S/page-size) pages (at least one) of its object's own "
                    "range of consecutive pages. Ids are renumbered 0..D-1 by first reference; "
                    "the output appears only if the whole input converts.")
    imp.add_argument("source", metavar="FILE")
    imp.add_argument("--format", required=True, choices=FORMATS)
    imp.add_argument("--column", type=int, default=1, help="csv/text: the 1-based field with the id (default 1)")
    imp.add_argument("--skip-header", action="store_true", help="csv/text: ignore the first line")
    imp.add_argument("--object-sizes", action="store_true",
                     help="oracle-general: split each request into the pages its obj_size covers")
    imp.add_argument("--object-size-column", type=int, default=None, metavar="N",
                     help="csv/text: field N holds the object's size in bytes; split requests into pages")
    imp.add_argument("--page-size", type=int, default=4096,
                     help="bytes per page when splitting object sizes (default 4096)")
    imp.add_argument("--output", required=True, metavar="FILE")
    imp.set_defaults(run=command_trace_import)


def command_trace_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        summary = import_trace(args.source, args.output, args.format, args.column, args.skip_header,
                               object_sizes=args.object_sizes, size_column=args.object_size_column,
                               page_size=args.page_size)
    except OSError as exc:
        raise UsageError(f"{exc.filename or args.output}: {exc.strerror or exc}") from None
    split = (f", {summary['requests']:,} requests split into {summary['page_size']}-byte pages"
             if "requests" in summary else "")
    out.write(f"{summary['output']}: {summary['references']:,} references, "
              f"{summary['distinct_pages']:,} distinct pages (from {args.format}{split})\n")
    return 0


def command_trace_record(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("trace record: give the command to record after --, e.g. -- sort words.txt")

    last = [0.0]

    def progress(refs: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            err.write(f"\rrecording: {refs:,} references")
            err.flush()

    try:
        summary = record(command, args.output, instructions=args.instructions, page_size=args.page_size,
                         progress=None if args.quiet else progress)
    except RecordError as exc:
        if not args.quiet:
            err.write("\n")
        raise UsageError(str(exc)) from None
    if not args.quiet:
        err.write("\n")
    out.write(f"{summary['output']}: {summary['references']:,} references, {summary['distinct_pages']:,} "
              f"distinct pages, footprint {summary['footprint_mb']:,.2f} MB "
              f"({'instructions and data' if summary['instructions'] else 'data only'}, "
              f"{summary['page_size']}-byte pages)\n")
    return 0


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    try:
        return check_rate(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def trace_info_report(path, method: str = "auto", rate: float | None = None) -> dict:
    if rate is not None and method == "auto":
        method = "sampled"
    profile = trace_profile(load_trace(path), method, rate)
    misses = profile.pop("misses")
    refs = profile["references"]
    return {"trace": str(path), **profile,
            "lru_misses": [int(round(float(m))) for m in misses[1:]],
            "lru_miss_ratio": {f"{f:.0%}": _point(misses, max(1, math.floor(f * profile["footprint"])), refs)
                               for f in _SHOWN_FRACTIONS}}


def _point(misses, frames: int, refs: int) -> dict:
    count = int(round(float(misses[frames])))
    return {"frames": frames, "misses": count, "miss_ratio": count / refs}


def command_trace_info(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.method == "exact" and args.rate is not None:
        raise UsageError("trace info: --rate is for the sampled curve; drop it or --exact")
    report = trace_info_report(args.trace, args.method, args.rate)
    if args.json:
        out.write(json.dumps(report) + "\n")
    else:
        out.write(format_trace_info(report))
    return 0


_CURVE = (
    Column("", "footprint", ">", lambda key, p: key),
    Column("", "frames", ">", lambda key, p: f"{p['frames']:,}"),
    Column("", "misses", ">", lambda key, p: f"{p['misses']:,}"),
    Column("miss", "ratio", ">", lambda key, p: f"{p['miss_ratio']:.6f}"),
)


def _method_label(report: dict) -> str:
    if report["method"] == "exact":
        return "exact: every reference's stack distance"
    return (f"sampled: SHARDS at rate {report['sampling_rate']:.4g}, {report['sampled_pages']:,} pages and "
            f"{report['sampled_references']:,} references kept; estimated")


def format_trace_info(report: dict) -> str:
    refs, footprint = report["references"], report["footprint"]
    lines = [f"{report['trace']}: {refs:,} references, {footprint:,} distinct pages "
             f"({footprint * 4096 / 2**20:,.1f} MB at 4 KiB), {report['cold_misses']:,} first references",
             "", f"LRU miss-ratio curve ({_method_label(report)}, cold misses included; --json has every size):"]
    lines += format_table(_CURVE, [[c.cell(k, p) for c in _CURVE] for k, p in report["lru_miss_ratio"].items()])
    lines += ["", "working set (frames for this share of the reusable hits): "
              + ", ".join(f"{k} {v:,}" for k, v in report["working_set"].items()),
              "", "reuse (stack) distance histogram:"]
    for row in report["reuse_histogram"]:
        label = "first ref" if row.get("cold") else (
            f"{row['min']:,}" if row["min"] == row["max"] else f"{row['min']:,}-{row['max']:,}")
        share = row["references"] / refs
        lines.append(f"  {label:>17}  {row['references']:>12,}  {share:7.2%}  {'#' * round(share * 40)}")
    return "\n".join(lines) + "\n"
