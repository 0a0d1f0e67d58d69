"""``vmemlab mrc``: miss counts of a recorded trace under a guest replacement policy, like libCacheSim."""
from __future__ import annotations

import argparse
import json
import math
from typing import Sequence, TextIO

from ..engine.mrc import miss_counts
from ..engine.traces import load_trace, trace_stats
from .common import Column, UsageError, format_table


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
