"""Single-step LIF (OTTT's online regime): one fused forward (charge, fire,
reset, optional dropout mask, optional trace of the output spikes) and the
surrogate backward. One program handles BLOCK neurons; everything is
element-wise, so each kernel streams its tensors exactly once.
"""
import torch
import triton
import triton.language as tl

from . import _common as C
from ._math import as_acc, charge, fire, reset, surrogate_grad


@triton.jit
def _lif_step_fwd_kernel(x_ptr, v_ptr, tr_ptr, m_ptr,
                         spike_ptr, v_next_ptr, h_ptr, tr_next_ptr,
                         numel,
                         decay: tl.float64, in_scale: tl.float64, bias: tl.float64,
                         v_th: tl.float64, v_reset: tl.float64, trace_decay: tl.float64,
                         HAS_V: tl.constexpr, HAS_TRACE: tl.constexpr, HAS_MASK: tl.constexpr,
                         SAVE_H: tl.constexpr, HARD_RESET: tl.constexpr,
                         ACC: tl.constexpr, BLOCK: tl.constexpr):
    # int64 offsets: tensors past 2**31 elements must not wrap.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < numel
    c_decay = as_acc(decay, ACC)
    c_in = as_acc(in_scale, ACC)
    c_bias = as_acc(bias, ACC)
    c_th = as_acc(v_th, ACC)
    c_reset = as_acc(v_reset, ACC)

    x = tl.load(x_ptr + offs, mask=inb, other=0.0).to(ACC)
    if HAS_V:
        v = tl.load(v_ptr + offs, mask=inb, other=0.0).to(ACC)
    else:
        # A missing membrane is a zero one; keep the same formula so the
        # result is the one the compiled kernels give for v = 0.
        v = tl.zeros([BLOCK], ACC)
    h = charge(v, x, c_decay, c_in, c_bias)
    s = fire(h, c_th, ACC)
    tl.store(v_next_ptr + offs, reset(h, s, c_th, c_reset, HARD_RESET).to(v_next_ptr.dtype.element_ty),
             mask=inb)
    if HAS_MASK:
        out = s * tl.load(m_ptr + offs, mask=inb, other=0.0).to(ACC)
    else:
        out = s
    tl.store(spike_ptr + offs, out.to(spike_ptr.dtype.element_ty), mask=inb)
    if SAVE_H:
        # Saved for backward as z = h - v_th (see _math.fire_from_z).
        tl.store(h_ptr + offs, (h - c_th).to(h_ptr.dtype.element_ty), mask=inb)
    if HAS_TRACE:
        # The trace filters the (masked) output spike in op-math precision,
        # before it is rounded to the storage type.
        a = tl.load(tr_ptr + offs, mask=inb, other=0.0).to(ACC)
        tl.store(tr_next_ptr + offs, (as_acc(trace_decay, ACC) * a + out).to(tr_next_ptr.dtype.element_ty),
                 mask=inb)


@triton.jit
def _lif_step_bwd_kernel(g_ptr, z_ptr, m_ptr, gx_ptr, numel,
                         in_scale: tl.float64, alpha: tl.float64,
                         HAS_MASK: tl.constexpr, SURROGATE: tl.constexpr,
                         ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < numel
    gs = tl.load(g_ptr + offs, mask=inb, other=0.0).to(ACC)
    if HAS_MASK:
        gs = gs * tl.load(m_ptr + offs, mask=inb, other=0.0).to(ACC)
    z = tl.load(z_ptr + offs, mask=inb, other=0.0).to(ACC)
    sg = surrogate_grad(z, as_acc(alpha, ACC), SURROGATE, ACC)
    tl.store(gx_ptr + offs, (gs * sg * as_acc(in_scale, ACC)).to(gx_ptr.dtype.element_ty), mask=inb)


def lif_step_fwd(x, v, trace, mask, tau, v_th, v_reset, decay_input, trace_decay, surrogate, alpha, save_h):
    """(spike, v_next, z, trace_next); z = h - v_th, the charged membrane
    measured from threshold, is empty unless save_h, trace_next empty unless a
    trace is given. Same contract as torch.ops.ottt_cuda.lif_step_fwd."""
    C.check_float(x, "x")
    C.check_neuron_args(tau, alpha)
    C.surrogate_id(surrogate)  # validated only: the forward does not use it
    x = x.contiguous()
    v, trace, mask = C.contiguous_or_none(v), C.contiguous_or_none(trace), C.contiguous_or_none(mask)
    if v is not None:
        C.check_like(v, "v", x, "x")
    if trace is not None:
        C.check_like(trace, "trace", x, "x")
    if mask is not None:
        C.check_like(mask, "mask", x, "x")

    spike = torch.empty_like(x)
    v_next = torch.empty_like(x)
    h = torch.empty_like(x) if save_h else C.empty0(x)
    trace_next = torch.empty_like(x) if trace is not None else C.empty0(x)
    n = x.numel()
    if n == 0:
        return spike, v_next, h, trace_next
    decay, in_scale, bias, th, v_rst, hard = C.lif_coeffs(tau, v_th, v_reset, decay_input)
    # Absent optional tensors are never read (constexpr flags); x stands in for their pointers.
    with C.device_of(x, _lif_step_fwd_kernel):
        _lif_step_fwd_kernel[C.grid_1d(n)](
            x, v if v is not None else x, trace if trace is not None else x, mask if mask is not None else x,
            spike, v_next, h if save_h else x, trace_next if trace is not None else x,
            n, decay, in_scale, bias, th, v_rst, float(trace_decay),
            HAS_V=v is not None, HAS_TRACE=trace is not None, HAS_MASK=mask is not None,
            SAVE_H=bool(save_h), HARD_RESET=hard, ACC=C.acc_dtype(x.dtype), BLOCK=C.BLOCK,
            num_warps=C.NUM_WARPS)
    return spike, v_next, h, trace_next


def lif_step_bwd(grad_spike, h, mask, tau, v_th, decay_input, surrogate, alpha):
    """grad_x = grad_spike * mask * sg(z) * in_scale, where `h` holds z = h - v_th
    as lif_step_fwd saved it (so v_th is unused, as in the compiled ops)."""
    C.check_neuron_args(tau, alpha)
    kind = C.surrogate_id(surrogate)
    C.check_float(h, "h")
    h = h.contiguous()
    g = grad_spike.contiguous()
    C.check_like(g, "grad_spike", h, "h")
    mask = C.contiguous_or_none(mask)
    if mask is not None:
        C.check_like(mask, "mask", h, "h")
    grad_x = torch.empty_like(h)
    n = h.numel()
    if n == 0:
        return grad_x
    with C.device_of(h, _lif_step_bwd_kernel):
        _lif_step_bwd_kernel[C.grid_1d(n)](
            g, h, mask if mask is not None else h, grad_x, n,
            C.in_scale(tau, decay_input), float(alpha),
            HAS_MASK=mask is not None, SURROGATE=kind, ACC=C.acc_dtype(h.dtype), BLOCK=C.BLOCK,
            num_warps=C.NUM_WARPS)
    return grad_x
