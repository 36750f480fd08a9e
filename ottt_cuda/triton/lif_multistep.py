"""Multi-step LIF for the BPTT baseline: all T steps of x_seq [T, ...] in one
launch. Neurons are independent, so each program owns BLOCK neurons and runs
the time loop itself, keeping the membrane (forward) or dL/dv (backward) in
registers: every tensor is read or written once, and there are no T launches.
"""
import torch
import triton
import triton.language as tl

from . import _common as C
from ._math import as_acc, charge, fire, fire_from_z, reset, surrogate_grad


@triton.jit
def _lif_multistep_fwd_kernel(x_ptr, v0_ptr, spike_ptr, h_ptr, v_last_ptr,
                              n, T,
                              decay: tl.float64, in_scale: tl.float64, bias: tl.float64,
                              v_th: tl.float64, v_reset: tl.float64,
                              T_STATIC: tl.constexpr, HAS_V0: tl.constexpr, SAVE_H: tl.constexpr, HARD_RESET: tl.constexpr,
                              ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    c_decay = as_acc(decay, ACC)
    c_in = as_acc(in_scale, ACC)
    c_bias = as_acc(bias, ACC)
    c_th = as_acc(v_th, ACC)
    c_reset = as_acc(v_reset, ACC)
    if HAS_V0:
        v = tl.load(v0_ptr + offs, mask=inb, other=0.0).to(ACC)
    else:
        v = tl.zeros([BLOCK], ACC)
    # Step t of neuron i is element t*n + i. The pointers advance by n per
    # step (64-bit pointer arithmetic), so t*n is never formed in 32 bits.
    px = x_ptr + offs
    ps = spike_ptr + offs
    ph = h_ptr + offs
    # T_STATIC: T for the interpreter only (see _common.interpreter_bound).
    for _t in range(T if T_STATIC is None else T_STATIC):
        h = charge(v, tl.load(px, mask=inb, other=0.0).to(ACC), c_decay, c_in, c_bias)
        s = fire(h, c_th, ACC)
        v = reset(h, s, c_th, c_reset, HARD_RESET)
        tl.store(ps, s.to(spike_ptr.dtype.element_ty), mask=inb)
        if SAVE_H:
            # Saved for backward as z = h - v_th (see _math.fire_from_z).
            tl.store(ph, (h - c_th).to(h_ptr.dtype.element_ty), mask=inb)
        px += n
        ps += n
        ph += n
    tl.store(v_last_ptr + offs, v.to(v_last_ptr.dtype.element_ty), mask=inb)


@triton.jit
def _dreset_dh_attached(z, sg, v_th, v_reset, HARD_RESET: tl.constexpr, ACC: tl.constexpr):
    # dv[t]/dh[t] through the spike as well (detach_reset=False), term by term
    # as ottt::dreset_dh_attached: soft 1 - v_th sg(z); hard (1 - s) + (v_reset - h) sg(z), h = z + v_th.
    if HARD_RESET:
        r = (1.0 - fire_from_z(z, ACC)) + (v_reset - (z + v_th)) * sg
    else:
        r = 1.0 - v_th * sg
    return r


@triton.jit
def _lif_multistep_bwd_kernel(g_ptr, z_ptr, gvl_ptr, gx_ptr, gv0_ptr,
                              n, T, last_off,
                              decay: tl.float64, in_scale: tl.float64, alpha: tl.float64,
                              v_th: tl.float64, v_reset: tl.float64,
                              T_STATIC: tl.constexpr, HAS_GVL: tl.constexpr, HARD_RESET: tl.constexpr, SURROGATE: tl.constexpr,
                              DETACH_RESET: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    c_decay = as_acc(decay, ACC)
    c_in = as_acc(in_scale, ACC)
    c_alpha = as_acc(alpha, ACC)
    c_th = as_acc(v_th, ACC)
    c_reset = as_acc(v_reset, ACC)
    # grad_v = dL/dv[t], flowing back from step t+1 (from v_last at t = T-1).
    if HAS_GVL:
        grad_v = tl.load(gvl_ptr + offs, mask=inb, other=0.0).to(ACC)
    else:
        grad_v = tl.zeros([BLOCK], ACC)
    # Start at step T-1 (last_off = (T-1)*n, computed on the host in 64 bits).
    pg = g_ptr + offs + last_off
    pz = z_ptr + offs + last_off
    px = gx_ptr + offs + last_off
    # T_STATIC: T for the interpreter only (see _common.interpreter_bound).
    for _t in range(T if T_STATIC is None else T_STATIC):
        z = tl.load(pz, mask=inb, other=0.0).to(ACC)
        g = tl.load(pg, mask=inb, other=0.0).to(ACC)
        sg = surrogate_grad(z, c_alpha, SURROGATE, ACC)
        # The spike is recomputed from z = h - v_th (not saved). With the reset
        # detached dv[t]/dh[t] is 1 (soft) or 1 - s (hard).
        if DETACH_RESET:
            if HARD_RESET:
                dv_dh = 1.0 - fire_from_z(z, ACC)
            else:
                dv_dh = tl.full([BLOCK], 1.0, ACC)
        else:
            dv_dh = _dreset_dh_attached(z, sg, c_th, c_reset, HARD_RESET, ACC)
        grad_h = g * sg + grad_v * dv_dh
        tl.store(px, (grad_h * c_in).to(gx_ptr.dtype.element_ty), mask=inb)
        grad_v = grad_h * c_decay
        pg -= n
        pz -= n
        px -= n
    tl.store(gv0_ptr + offs, grad_v.to(gv0_ptr.dtype.element_ty), mask=inb)


def _check_seq(t, name):
    if t.dim() < 1:
        raise ValueError(f"{name} must have a leading time dimension [T, ...], got a 0-d tensor")


def lif_multistep_fwd(x_seq, v0, tau, v_th, v_reset, decay_input, surrogate, alpha, save_h, detach_reset=True):
    """(spike_seq, v_last, z_seq) with z = h - v_th; z_seq is empty unless
    save_h. Same contract as torch.ops.ottt_cuda.lif_multistep_fwd (detach_reset
    does not change the forward)."""
    C.check_float(x_seq, "x_seq")
    _check_seq(x_seq, "x_seq")
    C.check_neuron_args(tau, alpha)
    C.surrogate_id(surrogate)  # validated only: the forward does not use it
    x = x_seq.contiguous()
    v0 = C.contiguous_or_none(v0)
    T = x.shape[0]
    step_shape = x.shape[1:]
    n = x[0].numel() if T > 0 else 0
    if v0 is not None:
        if v0.shape != step_shape:
            raise ValueError(f"v0 must have the shape of one step of x_seq {list(step_shape)}, "
                             f"got {list(v0.shape)}")
        if v0.dtype != x.dtype or v0.device != x.device:
            raise TypeError("v0 must have the dtype and device of x_seq")
    spike = torch.empty_like(x)
    h_seq = torch.empty_like(x) if save_h else C.empty0(x)
    if T == 0:
        # No step: the last membrane is the initial one.
        v_last = v0.clone() if v0 is not None else x.new_zeros(step_shape)
        return spike, v_last, h_seq
    v_last = x.new_empty(step_shape)
    if n == 0:
        return spike, v_last, h_seq
    decay, in_scale, bias, th, v_rst, hard = C.lif_coeffs(tau, v_th, v_reset, decay_input)
    with C.device_of(x, _lif_multistep_fwd_kernel):
        _lif_multistep_fwd_kernel[C.grid_1d(n)](
            x, v0 if v0 is not None else x, spike, h_seq if save_h else x, v_last,
            n, T, decay, in_scale, bias, th, v_rst,
            T_STATIC=C.interpreter_bound(_lif_multistep_fwd_kernel, T), HAS_V0=v0 is not None, SAVE_H=bool(save_h), HARD_RESET=hard,
            ACC=C.acc_dtype(x.dtype), BLOCK=C.BLOCK, num_warps=C.NUM_WARPS)
    return spike, v_last, h_seq


def lif_multistep_bwd(grad_spike_seq, grad_v_last, h_seq, tau, v_th, v_reset, decay_input, surrogate, alpha,
                      detach_reset=True):
    """Reverse-time BPTT recurrence, the reset detached unless detach_reset is
    False: (grad_x_seq, grad_v0). `h_seq` holds z = h - v_th as
    lif_multistep_fwd saved it."""
    C.check_neuron_args(tau, alpha)
    _check_seq(h_seq, "h_seq")
    kind = C.surrogate_id(surrogate)
    C.check_float(h_seq, "h_seq")
    h = h_seq.contiguous()
    g = grad_spike_seq.contiguous()
    C.check_like(g, "grad_spike_seq", h, "h_seq")
    gvl = C.contiguous_or_none(grad_v_last)
    T = h.shape[0]
    step_shape = h.shape[1:]
    if gvl is not None:
        if gvl.shape != step_shape:
            raise ValueError(f"grad_v_last must have the shape of one step {list(step_shape)}, "
                             f"got {list(gvl.shape)}")
        if gvl.dtype != h.dtype or gvl.device != h.device:
            raise TypeError("grad_v_last must have the dtype and device of h_seq")
    grad_x = torch.empty_like(h)
    if T == 0:
        # No step: v0 is v_last.
        return grad_x, (gvl.clone() if gvl is not None else h.new_zeros(step_shape))
    grad_v0 = h.new_empty(step_shape)
    n = h[0].numel()
    if n == 0:
        return grad_x, grad_v0
    decay, in_scale, _bias, th, v_rst, hard = C.lif_coeffs(tau, v_th, v_reset, decay_input)
    with C.device_of(h, _lif_multistep_bwd_kernel):
        _lif_multistep_bwd_kernel[C.grid_1d(n)](
            g, h, gvl if gvl is not None else h, grad_x, grad_v0,
            n, T, (T - 1) * n, decay, in_scale, float(alpha), th, v_rst,
            T_STATIC=C.interpreter_bound(_lif_multistep_bwd_kernel, T), HAS_GVL=gvl is not None, HARD_RESET=hard, SURROGATE=kind,
            DETACH_RESET=bool(detach_reset),
            ACC=C.acc_dtype(h.dtype), BLOCK=C.BLOCK, num_warps=C.NUM_WARPS)
    return grad_x, grad_v0
