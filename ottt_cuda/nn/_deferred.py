"""A Linear synapse's weight gradient, summed over time steps with one GEMM.

OTTT_A's weight gradient is sum_t g[t]^T a[t]. Adding each step's outer product to
.grad as it comes reads and writes the whole weight every step: at batch 1 that is
the step's largest memory traffic (784x400: 2.5 MB per step, ~250 us on a loaded
2-core machine, for ~0.3 MFLOP). Keeping the per-step factors g[t] [B, out] and
a[t] [B, in] instead and adding them all at once, grad += G^T A with G, A the
stacked rows, touches the weight once per flush and gives the same sum.

Memory stays bounded and independent of T: the pending rows are flushed as soon
as they hold as many numbers as the weight, rows * (in + out) >= in * out (at
large batch that is every step, which is the per-step accumulation again).
Used only inside nn.online_steps(defer_weight_grads=True), which flushes on exit
(before the hoisted sWS weights are back-propagated); on an exception the pending
rows are dropped, like the rest of the step's gradient.
"""
import torch

from . import _fast
from ._autograd import bias_grad, grad_fits


class DeferredWeightGrad:
    """Pending (g, a) rows of one weight (and of its bias: the bias gradient is the column sum of g)."""

    def __init__(self):
        self.weight = self.bias = None
        self.g, self.a = [], []
        self.rows = 0

    def add(self, weight, bias, g, a, a_scale=1.0):
        """Keep g [..., out] and a_scale * a [..., in] for `weight` (a leaf) and `bias` (a leaf or
        None: its gradient then is not kept here); flush when they weigh as much as the weight."""
        if self.weight is not None and (self.weight is not weight or self.bias is not bias):
            self.flush()  # another weight tensor (e.g. re-hoisted): settle the old one first
        self.weight, self.bias = weight, bias
        g2 = g if g.dim() == 2 else g.reshape(-1, g.shape[-1])
        # a is copied (scaled, when it must be, in the same pass): it may be the synapse's trace,
        # which the next step updates in place.
        a2 = a if a.dim() == 2 else a.reshape(-1, a.shape[-1])
        a2 = a2.clone() if a_scale == 1.0 else a2 * a_scale
        self.g.append(g2)
        self.a.append(a2)
        self.rows += g2.shape[0]
        if self.rows * (weight.shape[0] + weight.shape[1]) >= weight.numel():
            self.flush()

    def flush(self):
        """Add the pending rows to weight.grad (one GEMM) and bias.grad, and forget them."""
        if not self.g:
            return
        weight, bias = self.weight, self.bias
        g = torch.cat(self.g) if len(self.g) > 1 else self.g[0]
        a = torch.cat(self.a) if len(self.a) > 1 else self.a[0]
        self.drop()
        with torch.no_grad():
            _add_to_grad(weight, None, lambda: torch.mm(g.t(), a),
                         lambda grad: _fast.outer_accumulate_(grad, g, a, _fast.compiled(weight)))
            if bias is not None:
                # Summed in float32 at least, as the per-step bias gradient (LinearTrace.backward).
                gb = bias_grad(g).to(bias.dtype)
                _add_to_grad(bias, gb)

    def drop(self):
        self.weight = self.bias = None
        self.g, self.a = [], []
        self.rows = 0


def _add_to_grad(p, value, make=None, accumulate=None):
    """p.grad += value (or p.grad = value when there is none); `make()` builds the value and
    `accumulate(grad)` adds it in place, where computing it apart would be wasted."""
    grad = p.grad
    if grad is None:
        p.grad = value if value is not None else make()
    elif accumulate is not None and grad_fits(p, grad):
        accumulate(grad)
    else:
        grad.add_(value if value is not None else make())
