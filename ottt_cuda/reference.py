"""Pure-PyTorch reference of every op: the specification the kernels are tested
against, and the always-available 'torch' backend.

Written from docs/design.md ("The maths") with ordinary tensor operations and autograd;
it calls no kernel of this package. fp16/bf16 inputs are computed in fp32 and
rounded once at the end, as the kernels do.
"""
import math

import torch

SURROGATES = ("sigmoid", "atan", "triangle", "rectangle")


def surrogate_grad_ref(z: torch.Tensor, surrogate: str = "sigmoid", alpha: float = 4.0) -> torch.Tensor:
    """d/dz of the smooth stand-in for the Heaviside step H(z)."""
    if surrogate == "sigmoid":
        sig = torch.sigmoid(alpha * z)
        return alpha * sig * (1 - sig)
    if surrogate == "atan":
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * z) ** 2)
    if surrogate == "triangle":
        return alpha * torch.clamp(1 - alpha * z.abs(), min=0)
    if surrogate == "rectangle":
        return alpha * (z.abs() < 0.5 / alpha).to(z.dtype)
    raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")


class _Heaviside(torch.autograd.Function):
    """H(z) = (z >= 0) forward, surrogate derivative backward."""

    @staticmethod
    def forward(ctx, z, surrogate, alpha):
        ctx.save_for_backward(z)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * surrogate_grad_ref(z, ctx.surrogate, ctx.alpha), None, None


def heaviside(z, surrogate="sigmoid", alpha=4.0):
    return _Heaviside.apply(z, surrogate, alpha)


def _wide(t):
    """fp16/bf16 -> fp32 for the arithmetic; others unchanged."""
    return t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t


def _charge(x, v, tau, v_reset, decay_input):
    # SpikingJelly's LIF charge forms; v_reset enters only for a hard reset.
    leak = v if v_reset is None else v - v_reset
    if decay_input:
        return v + (x - leak) / tau
    return v - leak / tau + x


def _reset(h, s, v_th, v_reset):
    if v_reset is None:
        return h - v_th * s
    return h * (1 - s) + v_reset * s


def lif_step_ref(x, v=None, *, tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid",
                 alpha=4.0, trace=None, trace_decay=None, mask=None):
    """One OTTT LIF step: the membrane history and the reset are detached, so the
    gradient reaches x only, through the surrogate. Returns (spike, v_next) or
    (spike, v_next, trace_next) when trace_decay is given (trace None = zeros)."""
    dtype = x.dtype
    xw = _wide(x)
    vw = torch.zeros_like(xw) if v is None else _wide(v).detach()
    h = _charge(xw, vw, tau, v_reset, decay_input)
    s = heaviside(h - v_th, surrogate, alpha)
    v_next = _reset(h.detach(), s.detach(), v_th, v_reset)
    spike = s if mask is None else s * _wide(mask)
    out = (spike.to(dtype), v_next.to(dtype))
    if trace_decay is None:
        return out
    a = torch.zeros_like(xw) if trace is None else _wide(trace)
    return out + ((trace_decay * a + spike.detach()).to(dtype),)


def lif_multistep_ref(x_seq, v0=None, *, tau=2.0, v_th=1.0, v_reset=None, decay_input=False,
                      surrogate="sigmoid", alpha=4.0, detach_reset=True):
    """T LIF steps with the membrane history kept in the graph (BPTT). The reset
    is detached unless detach_reset is False; then the gradient also flows
    through the spike that drives the reset (SpikingJelly's detach_reset=False).
    Returns (spike_seq, v_last)."""
    dtype = x_seq.dtype
    xw = _wide(x_seq)
    v = xw.new_zeros(xw.shape[1:]) if v0 is None else _wide(v0)
    if x_seq.shape[0] == 0:
        return x_seq.clone(), v.to(dtype).clone()
    spikes = []
    for t in range(x_seq.shape[0]):
        h = _charge(xw[t], v, tau, v_reset, decay_input)
        s = heaviside(h - v_th, surrogate, alpha)
        v = _reset(h, s.detach() if detach_reset else s, v_th, v_reset)
        spikes.append(s)
    return torch.stack(spikes).to(dtype), v.to(dtype)


def trace_update_ref(trace, s, decay):
    """a_hat = decay * a_hat + s (trace None = zeros)."""
    a = torch.zeros_like(_wide(s)) if trace is None else _wide(trace)
    return (decay * a + _wide(s)).to(s.dtype)


def trace_update__ref(trace, s, decay):
    trace.copy_(trace_update_ref(trace, s, decay))


def _rows(t):
    """[..., k] -> [N, k]; works for zero sizes, where reshape(-1, k) is ambiguous."""
    return t.unsqueeze(0) if t.dim() == 1 else t.flatten(0, -2)


def outer_accumulate__ref(grad_w, g, a, alpha=1.0):
    """grad_w += alpha * g^T a, leading dims of g and a flattened into the batch."""
    out_f, in_f = grad_w.shape
    acc = torch.float64 if grad_w.dtype == torch.float64 else torch.float32
    gw = _rows(g).to(acc)
    aw = _rows(a).to(acc)
    grad_w.copy_((grad_w.to(acc) + alpha * (gw.t() @ aw)).to(grad_w.dtype))
