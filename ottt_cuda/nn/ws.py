"""Scaled weight standardization (supplementary C.1) on the OTTT synapses.

W_hat = gain * (W - mean_row) / sqrt(var_row * fan_in + eps), with the
unbiased row variance as in the paper's code; gamma (2.74 for spike outputs)
is applied by a Scale module after the neuron, as the paper's models do.

Hoisting: while the weights do not change during a training step (OTTT_A,
SLTT, BPTT), W_hat is computed once and handed to the synapse as a detached
leaf (computed without a graph); its gradient accumulates over the T steps
and is back-propagated through the standardization, rebuilt once, at the end
(`hoisted`). Exact, because the
sum over t commutes with the standardization's (linear) Jacobian. Without
hoisting (OTTT_O, or a user's own loop) every call re-standardizes.
"""
import contextlib

import torch
import torch.nn as nn

from .. import _validation
from .synapse import Conv2d, Linear


def standardize(weight, gain, eps):
    """W_hat = gain * (W - mean_row) / sqrt(var_row * fan_in + eps); gain None means 1."""
    _validation.tensor(weight, "weight")
    if weight.dim() < 2:
        raise ValueError(f"weight must have at least 2 dims [out, ...], got shape {tuple(weight.shape)}")
    dims = tuple(range(1, weight.dim()))
    fan_in = weight[0].numel()
    mean = weight.mean(dims, keepdim=True)
    var = weight.var(dims, keepdim=True)
    w = (weight - mean) / torch.sqrt(var * fan_in + eps)
    return w if gain is None else w * gain


class _WS:
    def _init_ws(self, gain, eps):
        self.eps = _validation.number(eps, "eps", low=0.0, low_open=True)
        _validation.boolean(gain, "gain")
        shape = (self.weight.shape[0],) + (1,) * (self.weight.dim() - 1)
        self.gain = nn.Parameter(torch.ones(shape, dtype=self.weight.dtype, device=self.weight.device)) if gain \
            else None
        self._hoisted = None

    def standardized_weight(self):
        return standardize(self.weight, self.gain, self.eps)

    def _weights(self):
        if self._hoisted is not None:
            return self._hoisted[1], self.bias
        return self.standardized_weight(), self.bias

    def hoist(self):
        # W_hat without a graph: holding the standardization's graph (W - mean,
        # the normalized W) for the whole step would cost twice the weights'
        # memory. unhoist() rebuilds it once, for the one backward it needs.
        needs_grad = torch.is_grad_enabled() and (
            self.weight.requires_grad or (self.gain is not None and self.gain.requires_grad))
        with torch.no_grad():
            leaf = self.standardized_weight()
        self._hoisted = (needs_grad, leaf.requires_grad_(needs_grad))

    def unhoist(self, backward=True):
        needs_grad, leaf = self._hoisted
        self._hoisted = None
        if backward and needs_grad and leaf.grad is not None:
            torch.autograd.backward(self.standardized_weight(), leaf.grad)


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
