"""Presynaptic trace a = decay * a + s, out of place and in place."""
import torch
import triton
import triton.language as tl

from . import _common as C
from ._math import as_acc


@triton.jit
def _trace_kernel(a_ptr, s_ptr, out_ptr, numel, decay: tl.float64,
                  HAS_TRACE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    # out may alias a (the in-place op): each element is read before it is written.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < numel
    s = tl.load(s_ptr + offs, mask=inb, other=0.0).to(ACC)
    if HAS_TRACE:
        a = tl.load(a_ptr + offs, mask=inb, other=0.0).to(ACC)
    else:
        a = tl.zeros([BLOCK], ACC)  # a missing trace is a zero one
    tl.store(out_ptr + offs, (as_acc(decay, ACC) * a + s).to(out_ptr.dtype.element_ty), mask=inb)


def _launch(out, a, s, decay):
    n = s.numel()
    if n == 0:
        return
    with C.device_of(s, _trace_kernel):
        _trace_kernel[C.grid_1d(n)](a if a is not None else s, s, out, n, float(decay),
                                    HAS_TRACE=a is not None, ACC=C.acc_dtype(s.dtype), BLOCK=C.BLOCK,
                                    num_warps=C.NUM_WARPS)


def trace_update(trace, s, decay):
    """decay * trace + s as a new tensor; trace None is a zero trace."""
    C.check_float(s, "s")
    s = s.contiguous()
    a = C.contiguous_or_none(trace)
    if a is not None:
        C.check_like(a, "trace", s, "s")
    out = torch.empty_like(s)
    _launch(out, a, s, decay)
    return out


def trace_update_(trace, s, decay):
    """trace = decay * trace + s in place; returns None like the op."""
    C.check_float(trace, "trace")
    C.check_like(s, "s", trace, "trace")
    s = s.contiguous()
    if trace.is_contiguous():
        _launch(trace, trace, s, decay)
    else:
        # A strided trace (a slice of a larger state buffer): compute densely,
        # then write back through its strides.
        tmp = trace.contiguous()
        _launch(tmp, tmp, s, decay)
        trace.copy_(tmp)
    return None
