"""A plain-autograd reference of OTTT / SLTT / BPTT, written independently of
ottt_cuda's layers, in the style of the paper's code: a neuron emits its spike
and its trace, parameter-free modules act on both, and every parametrized
layer runs TWICE per step, on the spike (value) and on the trace (gradient),
joined by a replace-for-grad function. The tests in test_equivalence_*.py
compare ottt_cuda against it; test_equivalence_reference.py checks the
reference itself.

Only the parameter *values* and the layer order are read from an ottt_cuda
model; all arithmetic (neuron, surrogate, standardization, traces, loss) is
plain torch written here.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ottt_cuda import nn as onn


def surrogate_derivative(z, surrogate, alpha):
    """dH/dz stand-ins, written from the formulas in docs/design.md (each integrates to 1)."""
    if surrogate == "sigmoid":
        s = torch.sigmoid(alpha * z)
        return alpha * s * (1 - s)
    if surrogate == "atan":
        return alpha / (2 * (1 + (math.pi / 2 * alpha * z) ** 2))
    if surrogate == "triangle":
        return alpha * torch.relu(1 - alpha * z.abs())
    if surrogate == "rectangle":
        return alpha * (z.abs() < 1 / (2 * alpha)).to(z.dtype)
    raise ValueError(surrogate)


class Heaviside(torch.autograd.Function):
    """Spike forward; the surrogate derivative (sigmoid by default) backward."""

    @staticmethod
    def forward(ctx, z, alpha, surrogate="sigmoid"):
        ctx.save_for_backward(z)
        ctx.alpha, ctx.surrogate = alpha, surrogate
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * surrogate_derivative(z, ctx.surrogate, ctx.alpha), None, None


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
    """LIF, reset detached unless detach_reset=False; the membrane history is detached unless bptt.

    Charge h = lam*v + I (I/tau with decay_input) plus v_reset/tau for a hard
    reset (SpikingJelly's forms, expanded); soft reset v = h - v_th*s, hard
    reset v = v_reset where it fired. The membrane starts at rest: 0, or
    v_reset for a hard reset (as SpikingJelly). With detach_reset=False the
    gradient also flows through the spike in the reset (only bptt sees it: an
    online method detaches the membrane before its next use)."""

    def __init__(self, tau, v_th, alpha, bptt, v_reset=None, decay_input=False, surrogate="sigmoid",
                 detach_reset=True):
        self.tau, self.lam, self.v_th, self.alpha, self.bptt = tau, 1 - 1 / tau, v_th, alpha, bptt
        self.v_reset, self.decay_input, self.surrogate = v_reset, decay_input, surrogate
        self.detach_reset = detach_reset
        self.trace_decay = self.lam  # of the trace of this neuron's spikes; RefNet may set another
        self.v = None
        self.trace = None

    def __call__(self, x):
        v = torch.full_like(x, self.v_reset or 0.0) if self.v is None else self.v
        if not self.bptt:
            v = v.detach()
        h = self.lam * v + (x / self.tau if self.decay_input else x)
        if self.v_reset is not None:
            h = h + self.v_reset / self.tau
        s = Heaviside.apply(h - self.v_th, self.alpha, self.surrogate)
        sr = s.detach() if self.detach_reset else s
        if self.v_reset is None:
            self.v = h - self.v_th * sr
        else:
            self.v = h * (1 - sr) + self.v_reset * sr
        return s


def ref_neuron(m, bptt):
    """A RefNeuron with the options of ottt_cuda LIF `m` (its public attributes)."""
    return RefNeuron(m.tau, m.v_th, m.alpha, bptt, m.v_reset, m.decay_input, m.surrogate, m.detach_reset)


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
    mode: "ottt", "sltt" (trace = current spikes) or "bptt". neuron: RefNeuron
    options (tau, v_th, alpha, v_reset, decay_input, surrogate) for every LIF,
    instead of reading them from the LIF modules (to check a conversion).
    """

    def __init__(self, model, layers, mode="ottt", masks=None, neuron=None):
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
                self.ops.append(("lif", ref_neuron(m, mode == "bptt") if neuron is None else
                                 RefNeuron(bptt=mode == "bptt", **neuron)))
            elif isinstance(m, onn.Dropout):
                self.ops.append(("mask", m))
            elif isinstance(m, onn.Scale):
                self.ops.append(("free", (lambda c: lambda t: t * c)(m.c)))
            elif next(m.parameters(), None) is None and not isinstance(m, onn.Stateful):
                self.ops.append(("free", m))
            else:
                raise TypeError(f"reference does not know {type(m).__name__}")
        # The trace of a neuron's spikes decays with the leak of the neurons that the next synapse feeds
        # (docs/design.md, "OTTT"); the readout has no neuron after it: there, as in the paper's code, the
        # last neuron's own leak.
        lifs = [op for kind, op in self.ops if kind == "lif"]
        for pre, post in zip(lifs, lifs[1:]):
            pre.trace_decay = post.lam

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
                    lam = 0.0 if self.mode == "sltt" else op.trace_decay
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
