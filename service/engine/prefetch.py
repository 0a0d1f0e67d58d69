"""A software prefetch for the compiled loop (LLVM's ``llvm.prefetch``; numba has no such call).

The run loop draws each VM's references ahead of their use (kernel.run_vm, state.AHEAD_REFS), so
it can ask for a page table entry, then a frame, a few references before it needs them. A
one-level loop gets this for free from the processor, which runs ahead through many short
iterations at once; the engine's iterations are long (time, two levels, the fault path), so fewer
of them are in flight and each page table read waits for memory alone.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I8_PTR = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)


@intrinsic
def prefetch(typingctx, array, index):
    """Hint that ``array[index]`` (1-D, C order) will be read and written soon. No bounds check:
    a prefetch of any address is harmless, and the callers pass indices they are about to use."""
    if not isinstance(array, types.Array) or array.ndim != 1 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), _I8_PTR)
        function = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [_I8_PTR, _I32, _I32, _I32]))
        # write (1), keep in all cache levels (3), data cache (1)
        builder.call(function, [address, ir.Constant(_I32, 1), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen
