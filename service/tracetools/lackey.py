"""Record a program's page references with valgrind's lackey tool.

``valgrind --tool=lackey --trace-mem=yes`` prints one line per memory access on a file descriptor
(``I  addr,size`` instruction fetch; `` L``/`` S``/`` M`` load, store, modify). The log arrives on a
pipe and is consumed in fixed-size chunks, so memory stays bounded by the chunk plus one entry per
distinct page, whatever the program's length. Conversion follows shared/traces/README.md: an
access becomes the page of its first byte, ``M`` counts once, valgrind's ``==pid==`` lines are
skipped, and pages are renumbered densely in order of first touch.

The trace is written as text (one dense id per line) to a temporary file beside the output and
renamed into place only once the program exited with status 0: a failure leaves nothing behind.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .importers import as_created_file

CHUNK_BYTES = 1 << 22
VALGRIND_HINT = "valgrind is not installed; on Debian/Ubuntu: apt-get install valgrind"

_DATA = re.compile(rb"^ [LSM] ([0-9a-fA-F]+),", re.MULTILINE)
_ALL = re.compile(rb"^(?:I |\s[LSM]) ?([0-9a-fA-F]+),", re.MULTILINE)


class RecordError(Exception):
    """The recording could not be made; nothing was written."""


class DenseRenumberer:
    """Maps raw page numbers to 0..D-1 in order of first touch, chunk by chunk."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}

    def __call__(self, pages: np.ndarray) -> np.ndarray:
        uniq, first, inverse = np.unique(pages, return_index=True, return_inverse=True)
        mapped = np.empty(len(uniq), dtype=np.int64)
        # new pages get their numbers in the order they first occur in this chunk
        for k in np.argsort(first, kind="stable"):
            page = int(uniq[k])
            dense = self.ids.get(page)
            if dense is None:
                dense = self.ids[page] = len(self.ids)
            mapped[k] = dense
        return mapped[inverse.ravel()]


def parse_chunk(chunk: bytes, instructions: bool, page_shift: int) -> np.ndarray:
    """Page numbers of the accesses in whole lines of lackey output."""
    pattern = _ALL if instructions else _DATA
    return np.array([int(h, 16) >> page_shift for h in pattern.findall(chunk)], dtype=np.uint64)


def find_valgrind() -> str:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RecordError(VALGRIND_HINT)
    return valgrind


def record(command: Sequence[str], output: str | os.PathLike, *, instructions: bool = False,
           page_size: int = 4096, progress: Callable[[int], None] | None = None) -> dict:
    """Run ``command`` under lackey and write its dense page trace to ``output``; returns
    references, distinct pages and footprint in MB."""
    if not command:
        raise RecordError("no command to record; put it after --")
    if page_size < 1 or page_size & (page_size - 1):
        raise RecordError(f"--page-size must be a power of two, got {page_size}")
    if shutil.which(command[0]) is None:
        raise RecordError(f"{command[0]}: command not found")
    valgrind = find_valgrind()
    page_shift = page_size.bit_length() - 1
    output = Path(output)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    except OSError as exc:
        raise RecordError(f"cannot write next to {output}: {exc.strerror or exc}") from None
    renumber = DenseRenumberer()
    refs = 0
    proc = None
    try:
        read_fd, write_fd = os.pipe()
        # buffered: read() waits for a whole chunk, not the 64 KiB a pipe holds
        with open(fd, "wb") as sink, tempfile.TemporaryFile() as errors, \
                open(read_fd, "rb", buffering=CHUNK_BYTES) as log:
            argv = [valgrind, "--tool=lackey", "--trace-mem=yes", f"--log-fd={write_fd}", *command]
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=errors, pass_fds=(write_fd,),
                                        env={**os.environ, "LC_ALL": "C"})
            finally:
                os.close(write_fd)       # only the child writes; EOF comes when it exits
            rest = b""
            while True:
                block = log.read(CHUNK_BYTES)
                if not block:
                    break
                block = rest + block
                cut = block.rfind(b"\n") + 1
                rest = block[cut:]
                pages = parse_chunk(block[:cut], instructions, page_shift)
                if len(pages):
                    dense = renumber(pages)
                    sink.write(("\n".join(map(str, dense.tolist())) + "\n").encode())
                    refs += len(dense)
                    if progress:
                        progress(refs)
            if rest:
                pages = parse_chunk(rest + b"\n", instructions, page_shift)
                if len(pages):
                    sink.write(("\n".join(map(str, renumber(pages).tolist())) + "\n").encode())
                    refs += len(pages)
            status = proc.wait()
            if status != 0:
                errors.seek(0)
                tail = errors.read().decode(errors="replace").strip().splitlines()[-3:]
                detail = ("; its stderr ends: " + " | ".join(tail)) if tail else ""
                raise RecordError(f"{' '.join(command)} exited with status {status}{detail}; nothing written")
            if refs == 0:
                raise RecordError("lackey reported no memory references; nothing written")
        as_created_file(tmp_name)
        os.replace(tmp_name, output)
    except BaseException:
        if proc is not None and proc.poll() is None:      # interrupted: do not leave it running
            proc.kill()
            proc.wait()
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    distinct = len(renumber.ids)
    return {"output": str(output), "references": refs, "distinct_pages": distinct,
            "footprint_mb": distinct * page_size / 2**20, "page_size": page_size,
            "instructions": instructions}
