"""Kernel-test harness: a vectorised scan for the Triton interpreter.

The interpreter's generic ``tl.associative_scan`` calls the combine function once per element
from Python (~0.2 s per 8x32 tile), which would put the kernel tests far over their CI budget.
This replaces it, for the interpreter only, by the same sequential definition of an inclusive
scan applied one slice along the axis at a time (the combine function then sees whole slices).
It changes the test harness (the interpreter), not the kernels under test.
"""
import numpy as np
import pytest


def _sliced_generic_scan(self, input):
    datas = [arg.handle.data for arg in input]
    axis = self.axis
    outs = [np.empty_like(d) for d in datas]
    acc = None
    for i in range(datas[0].shape[axis]):
        cur = tuple(self.to_tensor(np.take(d, i, axis=axis), input[j].dtype) for j, d in enumerate(datas))
        if acc is None:
            acc = cur
        else:
            r = self.combine_fn.fn(*acc, *cur)
            acc = r if isinstance(r, tuple) else (r,)
        for j, o in enumerate(outs):
            idx = [slice(None)] * o.ndim
            idx[axis] = i
            o[tuple(idx)] = acc[j].handle.data
    return [self.to_tensor(o, input[j].dtype) for j, o in enumerate(outs)]


@pytest.fixture(autouse=True, scope="session")
def _fast_interpreter_scan():
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        yield
        return
    mp = pytest.MonkeyPatch()
    if hasattr(interpreter, "ScanOps") and hasattr(interpreter.ScanOps, "generic_scan"):
        mp.setattr(interpreter.ScanOps, "generic_scan", _sliced_generic_scan)
    yield
    mp.undo()
