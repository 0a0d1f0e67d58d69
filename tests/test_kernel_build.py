"""The compiled kernel relies on one private numba option, ``_nrt=False`` (no reference counting
of arrays across calls: see service/engine/kernel.py and the README's benchmark figures). Private
options can change meaning between numba releases without notice, so the pinned version is held
here and the option's effect is checked on compiled code: if either test fails after a numba
upgrade, re-measure the kernel with and without the option before changing the pin."""
from __future__ import annotations

import re
from pathlib import Path

import numba
import numpy as np

from service.engine import kernel

ROOT = Path(__file__).resolve().parent.parent


def test_numba_is_the_pinned_version():
    pinned = re.search(r'"numba==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert numba.__version__ == pinned, (
        f"numba {numba.__version__} is installed but pyproject.toml pins {pinned}: the kernel's private "
        "_nrt=False option was measured on the pinned version only")


def _caller_ir(**options) -> str:
    @numba.njit(**options)
    def callee(a, i):
        a[i] += 1

    @numba.njit(**options)
    def caller(a):
        for i in range(a.shape[0]):
            callee(a, i)
        return a.sum()

    assert caller(np.zeros(4, dtype=np.int64)) == 4
    return "\n".join(caller.inspect_llvm().values())


def test_kernel_functions_compile_without_reference_counting():
    options = {k: v for k, v in kernel.jit.keywords.items() if k != "cache"}   # the kernel's, uncached
    assert options.get("_nrt") is False
    counted = _caller_ir()
    assert "NRT_incref" in counted, "numba no longer counts array references across calls: _nrt=False is not needed"
    uncounted = _caller_ir(**options)
    assert "NRT_incref" not in uncounted and "NRT_decref" not in uncounted, (
        "numba's private _nrt=False no longer removes reference counting from the kernel's calls")
