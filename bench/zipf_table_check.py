"""Check that the Zipf rank table (kernel.zipf_table) changes no draw: for several sizes and skews,
draw the same random streams with the phase's table and with an empty one (every draw computed)
and compare the ranks and the streams' final states. Prints one line per case; exits 1 on a
difference. Not a test (tens of millions of draws).

Run:  .venv/bin/python bench/zipf_table_check.py [--draws N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.engine.kernel import zipf_constants, zipf_rank, zipf_table  # noqa: E402
from service.engine.state import ZIPF_BUCKET_BITS  # noqa: E402

CASES = ((197_632, 1.0), (194_560, 1.2), (786_432, 0.9), (1_000_000, 0.9), (10_000, 0.99), (50, 2.0),
         (3, 0.5), (70_000, 1.0001), (1, 1.0))


@njit(cache=False)
def _draw(rng, n, s, hx1, hn, ss, table, out):
    for j in range(out.shape[0]):
        out[j] = zipf_rank(rng, 0, n, s, hx1, hn, ss, table, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=10_000_000, help="draws per case and seed")
    args = ap.parse_args()
    failed = False
    for n, s in CASES:
        hx1, hn, ss = zipf_constants(n, s)
        table = np.zeros(1 << ZIPF_BUCKET_BITS, dtype=np.uint16)
        zipf_table(n, s, hx1, hn, ss, table)
        empty = np.zeros_like(table)
        for seed in (1, 0x9E3779B97F4A7C15):
            streams = [np.array([seed], dtype=np.uint64) for _ in range(2)]
            ranks = [np.empty(args.draws, dtype=np.int64) for _ in range(2)]
            for rng, tab, out in zip(streams, (table, empty), ranks):
                _draw(rng, n, s, hx1, hn, ss, tab, out)
            same = bool(np.array_equal(ranks[0], ranks[1]) and streams[0][0] == streams[1][0])
            failed |= not same
            print(f"n={n:>9,} s={s:<6g} seed={seed:#x}: {np.count_nonzero(table) / len(table):6.1%} of buckets "
                  f"from the table, {args.draws:,} draws {'identical' if same else 'DIFFERENT'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
