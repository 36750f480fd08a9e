"""A plain-autograd reference of OTTT / SLTT / BPTT, written independently of
ottt_cuda's layers, in the style of the paper's code: a neuron emits its spike
and its trace, parameter-free modules act on both, and every parametrized
layer runs TWICE per step, on the spike (value) and on the trace (gradient),
joined by a replace-for-grad function. The tests in test_equivalence_*.py
compare ottt_cuda against it; the tests here check the reference itself.

Only the parameter *values* and the layer order are read from an ottt_cuda
model; all arithmetic (neuron, surrogate, standardization, traces, loss) is
plain torch written here.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ottt_cuda import nn as onn


class Heaviside(torch.autograd.Function):
    """Spike forward; sigmoid surrogate alpha*sig(alpha z)(1 - sig(alpha z)) backward."""

    @staticmethod
    def forward(ctx, z, alpha):
        ctx.save_for_backward(z)
        ctx.alpha = alpha
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * z)
        return g * ctx.alpha * s * (1 - s), None


class ReplaceForGrad(torch.autograd.Function):
    """Value of the second argument; the gradient goes to both."""

    @staticmethod
    def forward(ctx, x, x_r):
        return x_r

    @staticmethod
    def backward(ctx, g):
        return g, g


def ref_standardize(w, gain, eps):
    fan_in = math.prod(w.shape[1:])
    dims = list(range(1, w.dim()))
    mean = torch.mean(w, dim=dims, keepdim=True)
    var = torch.var(w, dim=dims, keepdim=True)
    return (w - mean) / ((var * fan_in + eps) ** 0.5) * gain


class RefNeuron:
    """LIF with soft reset, decay_input=False, reset detached; the membrane
    history is detached unless bptt."""

    def __init__(self, tau, v_th, alpha, bptt):
        self.lam, self.v_th, self.alpha, self.bptt = 1 - 1 / tau, v_th, alpha, bptt
        self.v = None
        self.trace = None

    def __call__(self, x):
        v = torch.zeros_like(x) if self.v is None else self.v
        if not self.bptt:
            v = v.detach()
        h = self.lam * v + x
        s = Heaviside.apply(h - self.v_th, self.alpha)
        self.v = h - self.v_th * s.detach()
        return s


class RefSynapse:
    def __init__(self, mod, params):
        self.kind = "conv" if isinstance(mod, onn.Conv2d) else "linear"
        self.ws = isinstance(mod, (onn.WSConv2d, onn.WSLinear))
        self.eps = getattr(mod, "eps", None)
        self.traced = mod.trace
        self.p = params  # name -> reference Parameter
        if self.kind == "conv":
            self.conf = (mod.stride, mod.padding, mod.dilation, mod.groups)

    def weight(self):
        w = self.p["weight"]
        return ref_standardize(w, self.p["gain"], self.eps) if self.ws else w

    def __call__(self, x):
        w, b = self.weight(), self.p.get("bias")
        if self.kind == "conv":
            return F.conv2d(x, w, b, *self.conf)
        return F.linear(x, w, b)


class RefNet:
    """Reference of a feed-forward ottt_cuda model given as its layers in order.

    Parameters are cloned into fresh leaves (`params`, keyed by the ottt_cuda
    parameter names) so the reference can be stepped by its own optimizer.
    mode: "ottt", "sltt" (trace = current spikes) or "bptt".
    """

    def __init__(self, model, layers, mode="ottt", masks=None):
        names = {id(p): n for n, p in model.named_parameters()}
        self.params = {}
        self.ops = []
        self.mode = mode
        self.masks = masks or {}
        for m in layers:
            if isinstance(m, (onn.Linear, onn.Conv2d)):
                ps = {}
                for short, p in m.named_parameters(recurse=False):
                    ps[short] = nn.Parameter(p.detach().clone())
                    self.params[names[id(p)]] = ps[short]
                self.ops.append(("syn", RefSynapse(m, ps)))
            elif isinstance(m, onn.LIF):
                assert m.v_reset is None and not m.decay_input and m.surrogate == "sigmoid"
                self.ops.append(("lif", RefNeuron(m.tau, m.v_th, m.alpha, mode == "bptt")))
            elif isinstance(m, onn.Dropout):
                self.ops.append(("mask", m))
            elif isinstance(m, onn.Scale):
                self.ops.append(("free", (lambda c: lambda t: t * c)(m.c)))
            elif next(m.parameters(), None) is None and not isinstance(m, onn.Stateful):
                self.ops.append(("free", m))
            else:
                raise TypeError(f"reference does not know {type(m).__name__}")

    def step(self, x):
        """One time step. Between neurons the signal is a [spike, trace] pair
        (OTTT/SLTT) or a plain tensor (input, BPTT)."""
        h = x
        for kind, op in self.ops:
            pair = isinstance(h, list)
            if kind == "lif":
                s = op(h)
                if self.mode == "bptt":
                    h = s
                else:
                    lam = 0.0 if self.mode == "sltt" else op.lam
                    with torch.no_grad():
                        op.trace = s.detach() if op.trace is None else lam * op.trace + s.detach()
                    h = [s, op.trace]
            elif kind == "free" or kind == "mask":
                f = op if kind == "free" else (lambda t, m=self.masks[id(op)]: t * m)
                if pair:
                    with torch.no_grad():
                        tr = f(h[1])
                    h = [f(h[0]), tr]
                else:
                    h = f(h)
            else:
                if pair:
                    spike, trace = h
                    with torch.no_grad():
                        out = op(spike)
                    h = ReplaceForGrad.apply(op(ReplaceForGrad.apply(spike, trace)), out)
                else:
                    h = op(h)
        return h

    def grads(self):
        return {n: p.grad for n, p in self.params.items()}


def vgg_layers(model):
    return list(model.features) + list(model.classifier)


def ref_loss(out, y, T, a):
    onehot = F.one_hot(y, out.shape[-1]).to(out.dtype)
    return ((1 - a) * F.cross_entropy(out, y) + a * F.mse_loss(out, onehot)) / T


def run_reference(ref, x_at, y, T, a, *, optimizer=None, online=False, steps=None):
    """OTTT_A/SLTT (backward each step), OTTT_O (online: optimizer step each
    step), SLTT-K (backward only at `steps`), BPTT (mode bptt: one backward)."""
    total, osum = 0.0, 0
    bptt_loss = 0
    for t in range(T):
        if online:
            optimizer.zero_grad()
        if steps is not None and t not in steps:
            with torch.no_grad():
                out = ref.step(x_at(t))
                loss = ref_loss(out, y, T, a)
        else:
            out = ref.step(x_at(t))
            loss = ref_loss(out, y, T, a)
            if ref.mode == "bptt":
                bptt_loss = bptt_loss + loss
            else:
                loss.backward()
        if online:
            optimizer.step()
        total += loss.item()
        osum = osum + out.detach()
    if ref.mode == "bptt":
        bptt_loss.backward()
    return total, osum


def rel_err(actual, expected):
    """max |a - e| / max |e| (0 when both vanish)."""
    den = expected.abs().max().item()
    num = (actual - expected).abs().max().item()
    return num if den == 0 else num / den


# ---- checks of the reference itself --------------------------------------------------------


def test_reference_neuron_matches_dynamics_by_hand():
    n = RefNeuron(2.0, 1.0, 4.0, bptt=False)
    xs = torch.tensor([[0.6], [0.8], [2.5]], dtype=torch.float64)
    spikes = [n(x).item() for x in xs]
    # v: 0.6 (no spike) -> 0.3 + 0.8 = 1.1 (spike, v = 0.1) -> 0.05 + 2.5 = 2.55 (spike)
    assert spikes == [0.0, 1.0, 1.0]
    assert n.v.item() == pytest.approx(1.55)


def test_replace_for_grad_routes_gradient_to_both():
    a = torch.ones(3, requires_grad=True)
    b = torch.full((3,), 2.0, requires_grad=True)
    out = ReplaceForGrad.apply(a, b)
    assert torch.equal(out, b.detach())
    (out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(a.grad, torch.tensor([1.0, 2.0, 3.0])) and torch.equal(b.grad, a.grad)


def test_reference_standardization_has_zero_mean_unit_scale():
    w = torch.randn(5, 7, dtype=torch.float64) * 3 + 1
    ws = ref_standardize(w, torch.ones(5, 1, dtype=torch.float64), 0.0)
    assert torch.allclose(ws.mean(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ws.var(1) * 7, torch.ones(5, dtype=torch.float64), atol=1e-12)
