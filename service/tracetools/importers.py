"""Import traces from other tools into the project's format (one dense page id per line).

- ``oracle-general``: libCacheSim's oracleGeneral binary, 24-byte little-endian records
  (uint32 timestamp, uint64 obj_id, uint32 obj_size, int64 next_access_vtime). Each request is
  one reference to one page: object sizes are ignored, as libCacheSim does with obj_size 1, so
  miss counts match its caches of N objects.
- ``csv``: comma-separated rows; ``column`` (1-based) holds the object id.
- ``text``: whitespace-separated fields; ``column`` (1-based) holds the object id.

Ids of csv/text traces are taken as strings (``0x1f``, ``blk-7`` and ``42`` are all fine) and,
like binary ids, renumbered 0..D-1 by first reference, which changes no miss count. The output is
written to a temporary file beside it and renamed into place, so an error leaves nothing behind.
"""
from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..engine.traces import TraceError, renumber_dense

FORMATS = ("oracle-general", "csv", "text")
ORACLE_GENERAL = np.dtype([("timestamp", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"),
                           ("next_access_vtime", "<i8")])
_LINES_PER_WRITE = 1 << 16


def write_ids_atomically(output: str | os.PathLike, chunks: Iterable[np.ndarray]) -> int:
    """Write dense ids, one per line; returns the reference count. Nothing appears on failure."""
    output = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    refs = 0
    try:
        with open(fd, "wb") as sink:
            for chunk in chunks:
                if len(chunk):
                    sink.write(("\n".join(map(str, np.asarray(chunk).tolist())) + "\n").encode())
                    refs += len(chunk)
        if refs == 0:
            raise TraceError(output, None, "the input holds no references; nothing written")
        os.replace(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return refs


def read_oracle_general(path: str | os.PathLike) -> np.ndarray:
    """Object ids of an oracleGeneral file, in request order."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TraceError(path, None, f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise TraceError(path, None, "empty trace: it holds no references")
    whole, extra = divmod(size, ORACLE_GENERAL.itemsize)
    if extra:
        raise TraceError(path, None, f"truncated oracleGeneral file: {size} bytes is not a multiple of the "
                                     f"{ORACLE_GENERAL.itemsize}-byte record; request {whole + 1} is "
                                     f"incomplete ({extra} of {ORACLE_GENERAL.itemsize} bytes)")
    return np.fromfile(path, dtype=ORACLE_GENERAL)["obj_id"]


def _text_rows(path: Path, fmt: str):
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        if fmt == "csv":
            for number, row in enumerate(csv.reader(handle), start=1):
                yield number, row
        else:
            for number, line in enumerate(handle, start=1):
                yield number, line.split()


def read_column(path: str | os.PathLike, fmt: str, column: int, skip_header: bool = False):
    """Dense ids (first-reference order) of a csv/text trace, in chunks; blank lines are skipped,
    a row without the column or with an empty value is an error naming its line."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(path, None, "no such file")
    ids: dict[str, int] = {}
    chunk: list[int] = []
    for number, row in _text_rows(path, fmt):
        if skip_header and number == 1:
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < column:
            raise TraceError(path, number, f"has {len(row)} field(s); --column {column} is missing")
        value = row[column - 1].strip()
        if not value:
            raise TraceError(path, number, f"field {column} is empty")
        dense = ids.get(value)
        if dense is None:
            dense = ids[value] = len(ids)
        chunk.append(dense)
        if len(chunk) >= _LINES_PER_WRITE:
            yield np.array(chunk, dtype=np.int64)
            chunk = []
    if chunk:
        yield np.array(chunk, dtype=np.int64)


def import_trace(source: str | os.PathLike, output: str | os.PathLike, fmt: str,
                 column: int = 1, skip_header: bool = False) -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if column < 1:
        raise TraceError(source, None, f"--column counts from 1, got {column}")
    if fmt == "oracle-general":
        dense = renumber_dense(read_oracle_general(source), source)
        refs = write_ids_atomically(output, [dense])
        distinct = int(dense.max()) + 1
    else:
        chunks = read_column(source, fmt, column, skip_header)
        seen = [0]

        def counted():
            for c in chunks:
                seen[0] = max(seen[0], int(c.max()) + 1)
                yield c
        refs = write_ids_atomically(output, counted())
        distinct = seen[0]
    return {"output": str(output), "references": refs, "distinct_pages": distinct, "format": fmt}


__all__ = ["FORMATS", "ORACLE_GENERAL", "import_trace", "read_oracle_general", "write_ids_atomically"]
