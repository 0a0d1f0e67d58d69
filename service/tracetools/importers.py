"""Import traces from other tools into the project's format (one dense page id per line).

- ``oracle-general``: libCacheSim's oracleGeneral binary, 24-byte little-endian records
  (uint32 timestamp, uint64 obj_id, uint32 obj_size, int64 next_access_vtime). By default each
  request is one reference to one page: object sizes are ignored, as libCacheSim does with
  obj_size 1, so miss counts match its caches of N objects.
- ``csv``: comma-separated rows; ``column`` (1-based) holds the object id.
- ``text``: whitespace-separated fields; ``column`` (1-based) holds the object id.

Object sizes split into pages when asked (``object_sizes`` for oracle-general's obj_size field,
``size_column`` for csv/text): a request for an object of S bytes references the first
ceil(S / page_size) pages of that object's own range of consecutive pages, in order (at least one
page: a size-0 request still touches the object, where libCacheSim would skip it). Each object's
range is as long as its largest request, so objects never share a page. Splitting needs the
whole trace in memory (the ranges depend on every request); ids are then renumbered densely.

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
# page references a size split builds in memory (8 bytes each, a few copies): 1 G is ~30 GB at peak
MAX_SPLIT_REFERENCES = 500_000_000
ORACLE_GENERAL = np.dtype([("timestamp", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"),
                           ("next_access_vtime", "<i8")])
_LINES_PER_WRITE = 1 << 16


def as_created_file(path: str | os.PathLike) -> None:
    """Give a temporary file (mkstemp makes it 0600) the mode a file opened for writing would have
    had, so a trace renamed into place can be read by whoever could read the folder's other files."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


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
        as_created_file(tmp)
        os.replace(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return refs


def read_oracle_general(path: str | os.PathLike, full_records: bool = False) -> np.ndarray:
    """Object ids of an oracleGeneral file, in request order (the whole records if ``full_records``)."""
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
    records = np.fromfile(path, dtype=ORACLE_GENERAL)
    return records if full_records else records["obj_id"]


def _text_rows(path: Path, fmt: str):
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        if fmt == "csv":
            for number, row in enumerate(csv.reader(handle), start=1):
                yield number, row
        else:
            for number, line in enumerate(handle, start=1):
                yield number, line.split()


def _field(path: Path, number: int, row: list[str], column: int, option: str) -> str:
    if len(row) < column:
        raise TraceError(path, number, f"has {len(row)} field(s); {option} {column} is missing")
    value = row[column - 1].strip()
    if not value:
        raise TraceError(path, number, f"field {column} is empty")
    return value


def _rows(path: Path, fmt: str, skip_header: bool):
    if not path.is_file():
        raise TraceError(path, None, "no such file")
    for number, row in _text_rows(path, fmt):
        if skip_header and number == 1:
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        yield number, row


def read_column(path: str | os.PathLike, fmt: str, column: int, skip_header: bool = False):
    """Dense ids (first-reference order) of a csv/text trace, in chunks; blank lines are skipped,
    a row without the column or with an empty value is an error naming its line."""
    path = Path(path)
    ids: dict[str, int] = {}
    chunk: list[int] = []
    for number, row in _rows(path, fmt, skip_header):
        value = _field(path, number, row, column, "--column")
        dense = ids.get(value)
        if dense is None:
            dense = ids[value] = len(ids)
        chunk.append(dense)
        if len(chunk) >= _LINES_PER_WRITE:
            yield np.array(chunk, dtype=np.int64)
            chunk = []
    if chunk:
        yield np.array(chunk, dtype=np.int64)


def read_column_sizes(path: str | os.PathLike, fmt: str, column: int, size_column: int,
                      skip_header: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Dense object ids and sizes (bytes) of a csv/text trace, all in memory; a size that is not
    a non-negative integer is an error naming its line."""
    path = Path(path)
    ids: dict[str, int] = {}
    objects: list[int] = []
    sizes: list[int] = []
    for number, row in _rows(path, fmt, skip_header):
        value = _field(path, number, row, column, "--column")
        size = _field(path, number, row, size_column, "--object-size-column")
        if not size.isascii() or not size.isdigit():
            raise TraceError(path, number, f"object size {size!r} (field {size_column}) is not a whole number of bytes")
        objects.append(ids.setdefault(value, len(ids)))
        sizes.append(int(size))
    return np.array(objects, dtype=np.int64), np.array(sizes, dtype=np.int64)


def request_pages(sizes: np.ndarray, page_size: int) -> np.ndarray:
    """Pages each request covers: ceil(size / page_size), at least one."""
    return np.maximum(1, -(-np.asarray(sizes, dtype=np.int64) // page_size))


def split_into_pages(objects: np.ndarray, sizes: np.ndarray, page_size: int,
                     pages: np.ndarray | None = None) -> np.ndarray:
    """Page references of object requests (module docstring): request i touches pages
    base[obj] .. base[obj] + ceil(size / page_size) - 1; returned dense by first reference.
    ``pages``: request_pages(sizes, page_size), when the caller has it already."""
    pages = request_pages(sizes, page_size) if pages is None else pages
    # any dense numbering of the objects will do: the result is renumbered by first reference
    dense_obj = renumber_dense(np.asarray(objects, dtype=np.int64))
    span = np.zeros(int(dense_obj.max()) + 1 if dense_obj.size else 0, dtype=np.int64)
    np.maximum.at(span, dense_obj, pages)
    base = np.concatenate(([0], np.cumsum(span)[:-1]))
    # one run of consecutive ids per request: repeat each request's first page over its
    # length, then add 0, 1, 2 ... within the run
    first = base[dense_obj]
    run_start = np.concatenate(([0], np.cumsum(pages)[:-1]))
    refs = np.repeat(first - run_start, pages) + np.arange(int(pages.sum()), dtype=np.int64)
    return renumber_dense(refs)


def import_trace(source: str | os.PathLike, output: str | os.PathLike, fmt: str,
                 column: int = 1, skip_header: bool = False, *, object_sizes: bool = False,
                 size_column: int | None = None, page_size: int = 4096) -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if column < 1:
        raise TraceError(source, None, f"--column counts from 1, got {column}")
    if page_size < 1:
        raise TraceError(source, None, f"--page-size must be at least 1 byte, got {page_size}")
    if object_sizes and fmt != "oracle-general":
        raise TraceError(source, None, "--object-sizes reads oracleGeneral's size field; "
                                       "for csv/text give --object-size-column N")
    if size_column is not None and (fmt == "oracle-general" or size_column < 1):
        raise TraceError(source, None, "--object-size-column N (from 1) is for csv/text; "
                                       "for oracle-general give --object-sizes")
    if object_sizes or size_column is not None:
        if fmt == "oracle-general":
            records = read_oracle_general(source, full_records=True)
            objects, sizes = records["obj_id"], records["obj_size"]
        else:
            objects, sizes = read_column_sizes(source, fmt, column, size_column, skip_header)
            if objects.size == 0:
                raise TraceError(source, None, "the input holds no references; nothing written")
        pages = request_pages(sizes, page_size)
        total = int(pages.sum())
        if total > MAX_SPLIT_REFERENCES:
            raise TraceError(source, None, f"split into {page_size}-byte pages, the {objects.size:,} requests make "
                                           f"{total:,} page references, over the {MAX_SPLIT_REFERENCES:,} this "
                                           f"import holds in memory: use a larger --page-size")
        dense = split_into_pages(objects, sizes, page_size, pages)
        refs = write_ids_atomically(output, [dense])
        return {"output": str(output), "references": refs, "distinct_pages": int(dense.max()) + 1,
                "format": fmt, "requests": int(objects.size), "page_size": page_size}
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


__all__ = ["FORMATS", "ORACLE_GENERAL", "as_created_file", "import_trace", "read_oracle_general", "split_into_pages",
           "write_ids_atomically"]
