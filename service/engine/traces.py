"""Recorded page-reference traces: one page id per reference.

Accepted files (the format is recognised by its first bytes, never by its name):

- text, one non-negative decimal integer per line, plain or gzip-compressed
  (shared/traces/README.md); spaces around a number, CRLF line ends and trailing blank lines
  are tolerated;
- numpy ``.npy`` holding a 1-D integer array.

``load_trace`` returns **dense** ids, 0..D-1 numbered in order of first reference, as int32: the
simulator indexes per-page arrays by id, and renaming ids this way changes no miss count.

The shared traces have 20 M lines, so the happy path is all numpy and bytes methods, about one
second per 20 M lines; Python-level work happens only to describe the first bad line.
"""
from __future__ import annotations

import gzip
import re
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"

MAX_DISTINCT_IDS = 2**31 - 1          # dense ids must fit in int32
_INT64_MAX = int(np.iinfo(np.int64).max)
_DIGITS = b"0123456789"
_INLINE_SPACE = b" \t\r"
_TWO_VALUES = re.compile(rb"[^\s][ \t\r]+[^\s]")
_BLANK_LINE = re.compile(rb"(?:^|\n)[ \t\r]*\n")
_LONG_NUMBER = re.compile(rb"[0-9]{19,}")    # 19 digits is where int64 can overflow


class TraceError(ValueError):
    """A trace file that cannot be used; ``line`` is 1-based, or None for whole-file problems."""

    def __init__(self, path: str | PathLike, line: int | None, message: str):
        where = f"{path} line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


def load_trace(path: str | PathLike) -> np.ndarray:
    """Read a trace file and return its references as dense int32 ids (see module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TraceError(path, None, "no such file") from None
    except IsADirectoryError:
        raise TraceError(path, None, "is a directory, not a trace file") from None
    except OSError as exc:
        raise TraceError(path, None, f"cannot read: {exc.strerror or exc}") from None

    if data.startswith(NPY_MAGIC):
        raw = _read_npy(path)
    elif data.startswith(ZIP_MAGIC):
        raise TraceError(path, None, "a zip / .npz archive is not a trace; save one array with numpy.save")
    else:
        if data.startswith(GZIP_MAGIC):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                raise TraceError(path, None, f"not a valid gzip file: {exc}") from None
        raw = _parse_text(path, data)
    return renumber_dense(raw, path)


def renumber_dense(raw: np.ndarray, path: str | PathLike = "trace") -> np.ndarray:
    """Map non-negative ids to 0..D-1 in order of first reference, as int32."""
    if raw.size == 0:
        raise TraceError(path, None, "empty trace: it holds no references")
    if _is_dense(raw):
        distinct = int(raw.max()) + 1
        dense = None
    else:
        # np.unique sorts; the first-occurrence index of each distinct id, ranked, gives its
        # dense number, and return_inverse maps every reference to its distinct id.
        _, first_index, inverse = np.unique(raw, return_index=True, return_inverse=True)
        distinct = len(first_index)
        dense = (np.argsort(np.argsort(first_index, kind="stable"), kind="stable"))[inverse.ravel()]
    if distinct > MAX_DISTINCT_IDS:
        raise TraceError(path, None, f"{distinct} distinct ids; at most 2**31-1 are supported")
    return (raw if dense is None else dense).astype(np.int32, copy=False)


def trace_stats(ids: np.ndarray) -> dict[str, int]:
    """References and footprint (distinct ids) of a trace."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return {"refs": 0, "footprint": 0}
    low, high = int(ids.min()), int(ids.max())
    if low >= 0 and high < 4 * ids.size + 1024:
        # dense ids (what load_trace returns): counting beats sorting by far
        footprint = int(np.count_nonzero(np.bincount(ids)))
    else:
        footprint = int(np.unique(ids).size)
    return {"refs": int(ids.size), "footprint": footprint}


def _is_dense(raw: np.ndarray) -> bool:
    """True if ids already are 0..D-1 in order of first reference: the running maximum starts
    at 0 and never jumps by more than one (so every new id is the largest so far plus one)."""
    if raw[0] != 0:
        return False
    running_max = np.maximum.accumulate(raw)
    return bool(np.all(np.diff(running_max) <= 1))


def _read_npy(path: Path) -> np.ndarray:
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise TraceError(path, None, f"not a readable .npy file: {exc}") from None
    if raw.ndim != 1:
        raise TraceError(path, None, f".npy trace must be a 1-D array, got shape {raw.shape}")
    if raw.dtype.kind not in "iu":
        raise TraceError(path, None, f".npy trace must hold integers, got dtype {raw.dtype}")
    if raw.size and raw.dtype.kind == "i" and raw.min() < 0:
        at = int(np.argmax(raw < 0))
        raise TraceError(path, None, f"element {at}: negative id {int(raw[at])}")
    return raw


def _parse_text(path: Path, data: bytes) -> np.ndarray:
    body = data.rstrip()          # a trailing newline (or several) ends the file, it is no line
    if not body:
        raise TraceError(path, None, "empty trace: it holds no references")
    has_inline_space = any(ch in body for ch in (b" ", b"\t", b"\r"))

    problem = _first_problem_offset(body, has_inline_space)
    if problem is not None:
        raise _error_at(path, body, problem)

    if has_inline_space:
        body = body.translate(None, _INLINE_SPACE)   # keeps every newline, so line numbers hold
    ids = np.fromstring(body, dtype=np.int64, sep="\n")

    # fromstring saturates numbers beyond int64; only then look for the culprit
    if ids.size and ids.max() == _INT64_MAX:
        for match in _LONG_NUMBER.finditer(body):
            if int(match.group()) > _INT64_MAX:
                raise _error_at(path, body, match.start())
    return ids


def _first_problem_offset(body: bytes, has_inline_space: bool) -> int | None:
    """Byte offset of the earliest problem in ``body``, or None if every line is one number."""
    offsets = []
    stray = body.translate(None, _DIGITS + b"\n" + _INLINE_SPACE)
    if stray:
        offsets.append(min(body.find(bytes([ch])) for ch in set(stray)))
    if has_inline_space:
        for pattern in (_TWO_VALUES, _BLANK_LINE):
            match = pattern.search(body)
            if match:
                offsets.append(match.start() + (1 if match.group()[:1] == b"\n" else 0))
    else:
        if body.startswith(b"\n"):
            offsets.append(0)
        gap = body.find(b"\n\n")
        if gap >= 0:
            offsets.append(gap + 1)
    return min(offsets, default=None)


def _error_at(path: Path, body: bytes, offset: int) -> TraceError:
    line_start = body.rfind(b"\n", 0, offset) + 1
    line_end = body.find(b"\n", offset)
    if line_end < 0:
        line_end = len(body)
    line_number = body.count(b"\n", 0, line_start) + 1
    return TraceError(path, line_number, _describe_bad_line(body[line_start:line_end]))


def _describe_bad_line(line: bytes) -> str:
    text = line.strip()
    shown = text.decode("utf-8", errors="backslashreplace")
    if len(shown) > 40:
        shown = shown[:37] + "..."
    if not text:
        return "blank line; expected one page id per line"
    if text.startswith(b"-") and text[1:].isdigit():
        return f"negative id {shown!r}; page ids are non-negative integers"
    if text.isdigit():
        return f"{shown!r} is larger than the largest supported id (2**63-1)"
    if len(text.split()) > 1:
        return f"{shown!r} holds more than one value; expected one page id per line"
    return f"{shown!r} is not a non-negative integer"
