"""Scaled weight standardization (supplementary C.1) on the OTTT synapses.

W_hat = gain * (W - mean_row) / sqrt(var_row * fan_in + eps), with the
unbiased row variance as in the paper's code; gamma (2.74 for spike outputs)
is applied by a Scale module after the neuron, as the paper's models do.

Hoisting: while the weights do not change during a training step (OTTT_A,
SLTT, BPTT), W_hat is computed once and handed to the synapse as a detached
leaf (computed without a graph); its gradient accumulates over the T steps
and is back-propagated through the standardization once, at the end, in closed
form from the row statistics (`hoisted`, `standardize_backward`). Exact, because
the sum over t commutes with the standardization's (linear) Jacobian. Without
hoisting (OTTT_O, or a user's own loop) every call re-standardizes, with the same closed-form
backward (`_Standardized`).
"""
import contextlib
import math

import torch
import torch.nn as nn

from .. import _extension, _validation
from ._autograd import grad_to_accumulate_into
from .synapse import Conv2d, Linear


def _fan_in(weight):
    """Elements per output row; math.prod of the shape, not weight[0], which a weight with no rows lacks."""
    return math.prod(weight.shape[1:])


def _row_stats(weight, eps):
    """(W - mean_row, mean_row, sqrt(var_row * fan_in + eps)), the last two shaped [out, 1, ...]:
    the forward of standardize (differentiable) and of the hoisted path (under no_grad). The
    unbiased variance's sum of squares as a vector norm (one pass, no weight-sized temporary;
    aten::var's Welford reduction costs ~20x more on the CPU: 3.6 ms for a 400x784 weight)."""
    dims = tuple(range(1, weight.dim()))
    fan_in = _fan_in(weight)
    mean = weight.mean(dims, keepdim=True)
    centered = weight - mean
    # square(), not square_(): vector_norm's backward needs its output
    sum_sq = torch.linalg.vector_norm(centered, dim=dims, keepdim=True).square()
    return centered, mean, torch.sqrt(sum_sq / (fan_in - 1) * fan_in + eps)


def standardize(weight, gain, eps):
    """W_hat = gain * (W - mean_row) / sqrt(var_row * fan_in + eps); gain None means 1."""
    _validation.tensor(weight, "weight")
    if weight.dim() < 2:
        raise ValueError(f"weight must have at least 2 dims [out, ...], got shape {tuple(weight.shape)}")
    centered, _, scale = _row_stats(weight, eps)
    w = centered / scale
    return w if gain is None else w * gain


# The fused CPU kernels (csrc/cpu/ws_cpu.cpp): one read of each weight row instead of the 4 (forward)
# and ~7 (backward) passes of the torch expressions below, which stay the path everywhere else.
# The extension is built from this tree, so a loaded one has both.
_WS_FORWARD_CPU = _extension._C.ws_forward_cpu if _extension.loaded() else None
_WS_BACKWARD_CPU = _extension._C.ws_backward_cpu if _extension.loaded() else None


def _fused_cpu(kernel, weight, gain, *others):
    """Whether the fused CPU kernel takes these tensors: a contiguous, non-empty float32/float64 CPU
    weight with every other tensor of its dtype on the CPU, eagerly (torch.compile traces the torch
    expressions, as on every other device)."""
    return (kernel is not None and weight.is_cpu and weight.dtype in (torch.float32, torch.float64)
            and weight.numel() > 0 and weight.is_contiguous() and not torch.compiler.is_compiling()
            and all(t is None or (t.is_cpu and t.dtype == weight.dtype) for t in (gain, *others)))


def _standardized_and_stats(weight, gain, eps):
    """(W_hat, mean_row, scale_row) without a graph: the forward of the hoisted path, of the CUDA-graph
    step's refresh and of _Standardized; standardize_backward takes the row statistics."""
    with torch.no_grad():
        if _fused_cpu(_WS_FORWARD_CPU, weight, gain):
            return _WS_FORWARD_CPU(weight.detach(), None if gain is None else gain.detach(), float(eps))
        centered, mean, scale = _row_stats(weight, eps)
        return centered.mul_(1.0 / scale if gain is None else gain / scale), mean, scale


def standardize_backward(weight, gain, mean, scale, grad):
    """Gradients of sum(grad * standardize(weight, gain, eps)) for weight and gain, in closed
    form from the row statistics (mean, scale = sqrt(var * n + eps)) of the forward:
        x_hat = (W - mean) / scale,  R = sum_row(grad * x_hat),
        dL/dgain = R,
        dL/dW = c - mean_row(c),  c = gain / scale * (grad - n / (n - 1) * R * x_hat).
    (With d = grad * gain the usual normalization backward is (d - k sum_row(d x_hat) x_hat) / scale;
    gain is constant along a row, so sum_row(d x_hat) = gain R.) Four passes over the weight;
    on the CPU one (_WS_BACKWARD_CPU).
    Returns (grad_weight, grad_gain); grad_gain is None without a gain."""
    if _fused_cpu(_WS_BACKWARD_CPU, weight, gain, mean, scale, grad):
        with torch.no_grad():
            return _WS_BACKWARD_CPU(weight.detach(), None if gain is None else gain.detach(), mean, scale, grad)
    dims = tuple(range(1, weight.dim()))
    n = _fan_in(weight)
    k = n / (n - 1) if n > 1 else float("nan")  # fan_in 1: no unbiased variance (NaN, as the forward)
    with torch.no_grad():
        centered = weight - mean
        r = (centered * grad).sum(dims, keepdim=True).div_(scale)
        per_row = 1.0 / scale if gain is None else gain / scale
        c = grad * per_row
        c.addcmul_(centered, r * per_row / scale, value=-k)  # - k R gain / scale * x_hat
        return c.sub_(c.mean(dims, keepdim=True)), (None if gain is None else r)


class _Standardized(torch.autograd.Function):
    """W_hat = standardize(weight, gain, eps) with the closed-form backward (standardize_backward)
    instead of autograd's chain of divisions and products: what a WS synapse computes on every call
    where the weights change within a training step (OTTT_O steps the optimizer every time step).
    Forward keeps only the two [out] row statistics (the chain keeps weight-sized temporaries);
    backward is 4 passes over the weight. First-order only (the hoisted path is too)."""

    @staticmethod
    def forward(ctx, weight, gain, eps):
        w_hat, mean, scale = _standardized_and_stats(weight, gain, eps)
        ctx.save_for_backward(weight, gain, mean, scale)
        return w_hat

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        weight, gain, mean, scale = ctx.saved_tensors
        grad_w, grad_gain = standardize_backward(weight, gain, mean, scale, grad)
        return (grad_w if ctx.needs_input_grad[0] else None,
                grad_gain if ctx.needs_input_grad[1] else None, None)


class _WS:
    def _init_ws(self, gain, eps):
        self.eps = _validation.number(eps, "eps", low=0.0, low_open=True)
        _validation.boolean(gain, "gain")
        shape = (self.weight.shape[0],) + (1,) * (self.weight.dim() - 1)
        self.gain = nn.Parameter(torch.ones(shape, dtype=self.weight.dtype, device=self.weight.device)) if gain \
            else None
        self._hoisted = None

    def standardized_weight(self):
        if torch.is_grad_enabled() and (self.weight.requires_grad or
                                        (self.gain is not None and self.gain.requires_grad)):
            return _Standardized.apply(self.weight, self.gain, self.eps)
        return self.standardized_without_graph()[0]

    def _weights(self):
        if self._hoisted is not None:
            return self._hoisted[1], self.bias
        return self.standardized_weight(), self.bias

    def hoist(self):
        # W_hat without a graph: holding the standardization's graph (W - mean,
        # the normalized W) for the whole step would cost twice the weights'
        # memory. unhoist() back-propagates once, in closed form from the row
        # statistics kept here (two [out] vectors).
        needs_grad = torch.is_grad_enabled() and (
            self.weight.requires_grad or (self.gain is not None and self.gain.requires_grad))
        leaf, mean, scale = self.standardized_without_graph()
        self._hoisted = (needs_grad, leaf.requires_grad_(needs_grad), mean, scale)

    def standardized_without_graph(self):
        """(W_hat, mean_row, scale_row) computed under no_grad: what hoist() keeps, and what the
        CUDA-graph step (nn._graph) refreshes its fixed W_hat from; standardize_backward takes the
        row statistics."""
        return _standardized_and_stats(self.weight, self.gain, self.eps)

    def unhoist(self, backward=True):
        needs_grad, leaf, mean, scale = self._hoisted
        self._hoisted = None
        if not (backward and needs_grad and leaf.grad is not None):
            return
        grad_w, grad_gain = standardize_backward(self.weight, self.gain, mean, scale, leaf.grad)
        for p, g in ((self.weight, grad_w), (self.gain, grad_gain)):
            if p is not None and p.requires_grad:
                _accumulate(p, g)


def _accumulate(p, g):
    """Add g to p's gradient as AccumulateGrad would: set .grad (no copy) or add in place; a
    parameter with gradient hooks (or a non-leaf) goes through autograd, so that they run."""
    if p.is_leaf and p.grad is None and not (p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None)):
        p.grad = g
    elif grad_to_accumulate_into(p) is not None:
        p.grad.add_(g)
    else:
        torch.autograd.backward(p, g)


class WSLinear(_WS, Linear):
    """Linear with scaled weight standardization and a learnable gain [out, 1]."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, gain=True, eps=1e-4,
                 trace=True, trace_decay=0.5, step_mode="s"):
        super().__init__(in_features, out_features, bias, device, dtype, trace=trace, trace_decay=trace_decay,
                         step_mode=step_mode)
        self._init_ws(gain, eps)


class WSConv2d(_WS, Conv2d):
    """Conv2d with scaled weight standardization and a learnable gain [out, 1, 1, 1]."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None, *, gain=True, eps=1e-4, trace=True, trace_decay=0.5,
                 step_mode="s"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype, trace=trace, trace_decay=trace_decay, step_mode=step_mode)
        self._init_ws(gain, eps)


@contextlib.contextmanager
def hoisted(model, backward=True):
    """Standardize every WS weight of `model` once for the duration; on a normal
    exit back-propagate the accumulated gradient through the standardization
    (when `backward`). On an exception the accumulated gradient is dropped."""
    _validation.module(model)
    mods = [m for m in model.modules() if isinstance(m, _WS)]
    for m in mods:
        m.hoist()
    ok = False
    try:
        yield model
        ok = True
    finally:
        for m in mods:
            m.unhoist(backward=backward and ok)
