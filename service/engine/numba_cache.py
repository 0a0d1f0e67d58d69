"""Where numba keeps the engine's compiled code.

numba caches a function's machine code next to its source and invalidates it when that source
file changes, but not when a function it calls from another file changes. The engine's compiled
code spans kernel.py and mechanisms.py, so a stale cache could pair new Python with old machine
code. The cache therefore lives in a folder named by a digest of every compiled source file: any
edit starts a fresh cache.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numba

COMPILED_SOURCES = ("kernel.py", "mechanisms.py", "state.py", "prefetch.py")


def cache_dir() -> Path:
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in COMPILED_SOURCES:
        digest.update((here / name).read_bytes())
    digest.update(numba.__version__.encode())
    base = os.environ.get("VMEMLAB_NUMBA_CACHE_DIR") or Path.home() / ".cache" / "vmemlab" / "numba"
    return Path(base) / digest.hexdigest()[:16]


@contextmanager
def engine_cache() -> Iterator[None]:
    """Compile-cache the functions decorated inside this block under ``cache_dir()``, leaving
    numba's setting for everyone else's code as it was."""
    previous = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = str(cache_dir())
    try:
        yield
    finally:
        numba.config.CACHE_DIR = previous
