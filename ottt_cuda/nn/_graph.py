"""A CUDA-graph time step (issue 11 part 3): train_step(..., cuda_graph=True).

Every OTTT time step of a plain chain (nn._chain: an nn.Sequential of Linear, LIF,
Flatten, Identity) runs the same kernels on tensors of the same shapes, and its state
can live in fixed buffers, so one step (forward, the loss gradient, backward, the
weight-gradient accumulation) is captured once as a CUDA graph and replayed T times
per sample, one launch instead of ~30. BPTT cannot do this per step: its backward
needs all T steps.

StaticStep is that step written on fixed buffers: the input is copied into `x`, the
membranes and traces are updated in place, the weight and bias gradients are added
in place to `.grad` (per step: a graph cannot hold a growing list of pending rows as
nn._deferred does), the output is added to `out_sum` and the step's loss to
`loss_sum`. Nothing it reads or writes changes address between calls, which is what
a replay needs. The same code runs eagerly (capture=False) on any device; the CPU
tests compare it with the autograd path in float64, so on a GPU only the capture
itself is new.

A captured step is kept on the model for the input shape, dtype, T, loss_alpha, the
layers' settings and the addresses of the parameters and their .grad; anything else
captures again. Under cuda_graph=True, train_step zeroes gradients in place
(optimizer.zero_grad(set_to_none=False)) and gives a parameter without one a zero
.grad, since the graph writes into those tensors.
"""
import torch
import torch.nn.functional as F

from .. import _loss, ops
from . import _chain
from ._state import set_state

_CACHE_ATTR = "_ottt_cuda_graph_step"


class StaticStep:
    """One time step of `layers` (checked by _chain.check) on fixed buffers. reset() starts a
    sequence; run() reads self.x and self.onehot / self.y_index, updates the states, the
    parameters' .grad, out_sum and loss_sum."""

    def __init__(self, layers, x_example, T, loss_alpha):
        self.layers = layers
        self.kinds, self.grad_from = _chain.layer_kinds(layers)
        self.T, self.alpha = T, float(loss_alpha)
        self.x = torch.empty_like(x_example, memory_format=torch.contiguous_format)
        # Settings read once (as the eager path does at a sequence's first step).
        self.lif_args, self.decay = _settings(layers, self.kinds)
        self.lif_rest = [(m.v_reset or 0.0) if k == "lif" else None for m, k in zip(layers, self.kinds)]
        # Buffers made at the first run (their shapes come from the layers): membranes, traces.
        self.v = [None] * len(layers)
        self.trace = [None] * len(layers)
        self.out_sum = self.loss_sum = self.onehot = self.y_index = self.y_max = None

    def set_targets(self, y, y_max):
        """The sequence's targets into the fixed buffers (the one-hot is made at the first run,
        when the output width is known)."""
        self.y_max = y_max
        if self.y_index is None:
            self.y_index = torch.empty((y.shape[0], 1), dtype=torch.long, device=y.device)
        self.y_index.copy_(y.view(-1, 1))
        if self.onehot is not None:
            self._check_classes(self.onehot.shape[1])
            self.onehot.zero_().scatter_(1, self.y_index, 1.0)

    def _check_classes(self, classes):
        if self.y_max is not None and self.y_max >= classes:
            raise ValueError(f"y holds class index {self.y_max} but the model has {classes} outputs "
                             f"(classes 0..{classes - 1})")

    def reset(self):
        for i, rest in enumerate(self.lif_rest):
            if self.v[i] is not None:
                self.v[i].fill_(rest)
        for t in self.trace:
            if t is not None:
                t.zero_()
        if self.out_sum is not None:
            self.out_sum.zero_()
            self.loss_sum.zero_()

    @torch.no_grad()  # everything here is written out: no autograd graph (nor its saved tensors in a capture)
    def run(self):
        h, saved = self.x, []
        for i, (m, kind) in enumerate(zip(self.layers, self.kinds)):
            if kind == "linear":
                if self.decay[i] is not None:  # OTTT: a = decay * a + x, in place (a starts at 0: a = x)
                    if self.trace[i] is None:
                        self.trace[i] = torch.zeros_like(h)
                    ops._Compiled.trace_update_(self.trace[i], h, self.decay[i])
                    a = self.trace[i]
                else:  # SLTT, or the untraced input layer: the input itself
                    a = h
                saved.append(a)
                h = F.linear(h, m.weight, m.bias)
            elif kind == "lif":
                if self.v[i] is None:
                    self.v[i] = torch.full_like(h, self.lif_rest[i])
                spike, v_next, hh, _ = ops._Compiled.lif_step_fwd(h, self.v[i], None, None, *self.lif_args[i],
                                                                  i > self.grad_from)
                self.v[i].copy_(v_next)
                saved.append(hh)
                h = spike
            else:
                saved.append(h.shape)
                h = m(h)
        g = self._loss(h)
        for i in range(len(self.layers) - 1, self.grad_from - 1, -1):
            m, kind, s = self.layers[i], self.kinds[i], saved[i]
            if kind == "linear":
                g2 = g.reshape(-1, g.shape[-1])
                m.weight.grad.addmm_(g2.t(), s.reshape(-1, s.shape[-1]))
                if m.bias is not None:
                    m.bias.grad.add_(g2.sum(0, dtype=torch.float32 if g2.dtype != torch.float64 else g2.dtype)
                                     .to(m.bias.dtype))
                if i > self.grad_from:
                    g = g.matmul(m.weight)
            elif kind == "lif":
                tau, v_th, _v_reset, decay_input, _td, surrogate, alpha = self.lif_args[i]
                g = ops._Compiled.lif_step_bwd(g, s, None, tau, v_th, decay_input, surrogate, alpha)
            else:
                g = g.reshape(s)

    def _loss(self, u):
        """Adds the step's output and loss to out_sum / loss_sum; returns d loss / d u (the same
        functions, ottt_cuda._loss, as train_step's own loop)."""
        if u.dim() != 2:
            raise ValueError(f"the model's output must be [batch, classes] at each time step, got shape "
                             f"{tuple(u.shape)}")
        B, C = u.shape
        if self.out_sum is None:  # the first run (eager, before any capture)
            self._check_classes(C)
            self.onehot = torch.zeros_like(u).scatter_(1, self.y_index, 1.0)
            self.out_sum = torch.zeros_like(u)
            self.loss_sum = torch.zeros((), dtype=torch.float64, device=u.device)
        self.out_sum.add_(u)
        self.loss_sum.add_(_loss.step_losses(u.unsqueeze(0), self.y_index.view(-1), self.T, self.alpha,
                                             self.onehot)[0])
        return _loss.loss_grad(u, self.onehot, self.T, self.alpha)


def _settings(layers, kinds):
    """Per layer: the LIF's step arguments, and the decay of an OTTT-traced Linear's trace (None
    elsewhere: SLTT and the untraced input layer use the input itself)."""
    lif_args = [m._step_args() if k == "lif" else None for m, k in zip(layers, kinds)]
    decay = [m._checked_decay() if k == "linear" and m.mode == "ottt" and m.trace else None
             for m, k in zip(layers, kinds)]
    return lif_args, decay


def _key(layers, kinds, x0, T, loss_alpha, y):
    """What a captured step depends on: shapes, the layers and their settings, the addresses of the
    parameters and their .grad (a replay reads and writes exactly those)."""
    lif_args, decay = _settings(layers, kinds)
    ptrs = [(p.data_ptr(), p.grad.data_ptr()) for p in _params(layers, kinds)]
    return (tuple(x0.shape), x0.dtype, x0.device, T, float(loss_alpha), tuple(y.shape), tuple(id(m) for m in layers),
            tuple(lif_args), tuple(decay), tuple(ptrs))


def check_request(model, x, mode, amp, scaler, chunk, k):
    """train_step(cuda_graph=True)'s arguments: a clear error for anything it cannot capture."""
    if mode not in ("ottt_a", "sltt"):
        raise ValueError(f"cuda_graph=True supports mode 'ottt_a' or 'sltt', got mode {mode!r}")
    if amp is not None or scaler is not None:
        raise ValueError("cuda_graph=True does not support amp or a GradScaler")
    if chunk is not None or k is not None:
        raise ValueError("cuda_graph=True runs one time step per replay: chunk and k are not supported")
    if x.device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs the input on a CUDA device; x is on {x.device}")


def layers_for(model, x):
    """The model's layers for a StaticStep, or ValueError naming what cannot be captured."""
    layers, why = _chain.check(model, x, deferred=False)
    if layers is None:
        raise ValueError(f"cuda_graph=True cannot capture this model: {why}")
    return layers


def _params(layers, kinds):
    return [p for m, k in zip(layers, kinds) if k == "linear" for p in (m.weight, m.bias) if p is not None]


def train(model, x_at, y, T, loss_alpha, y_max, optimizer, capture):
    """train_step's cuda_graph=True loop (capture=False: the same fixed-buffer step, eagerly, on any
    device; the tests' way to check it on the CPU). Returns (loss float64, output sum)."""
    layers = layers_for(model, x_at(0))
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=False)  # the graph writes into these .grad tensors
    return run(model, layers, x_at, y, T, loss_alpha, y_max, capture)


def run(model, layers, x_at, y, T, loss_alpha, y_max, capture):
    """T steps of `layers` on x_at(0..T-1): returns (loss float64, output sum), as train_step's
    step loop does. capture=True: through a CUDA graph kept on `model` (captured on first use)."""
    x0 = x_at(0)
    kinds, _ = _chain.layer_kinds(layers)
    for p in _params(layers, kinds):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    key = _key(layers, kinds, x0, T, loss_alpha, y)
    step = getattr(model, _CACHE_ATTR, None)
    if step is None or step.built_for != key:
        step = StaticStep(layers, x0, T, loss_alpha)
        step.built_for = key  # the settings and addresses it was built (and captured) for
        step.graph = None
        object.__setattr__(model, _CACHE_ATTR, step)
    step.set_targets(y, y_max)
    if capture and step.graph is None:
        _capture(step, x0)
    step.reset()
    for t in range(T):
        step.x.copy_(x_at(t))
        if step.graph is not None:
            step.graph.replay()
        else:
            step.run()
    for i, (m, kind) in enumerate(zip(step.layers, step.kinds)):  # the layers' states, as the eager path leaves them
        if kind == "lif":
            set_state(m, "v", step.v[i].clone())
        elif step.trace[i] is not None:
            set_state(m, "a_hat", step.trace[i].clone())
            set_state(m, "_a_scale", 1.0)
    return step.loss_sum.clone(), step.out_sum.clone()


def _capture(step, x0):
    """Warm up on a side stream (buffers made, lazy initialisations, cuBLAS workspaces), then
    capture one step. The warm-up's effect on .grad is undone; the caller resets the states."""
    params = _params(step.layers, step.kinds)
    saved = [p.grad.clone() for p in params]
    step.x.copy_(x0)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step.reset()
        for _ in range(2):
            step.run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step.run()
    for p, g in zip(params, saved):
        p.grad.copy_(g)
    step.graph = graph
