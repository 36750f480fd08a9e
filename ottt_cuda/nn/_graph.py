"""A CUDA-graph time step: train_step(..., cuda_graph=True).

Every OTTT time step of a chain (nn._chain: an nn.Sequential of Linear / WSLinear,
LIF, RecurrentLIF, Dropout, Flatten, Identity, or models.R400) runs the same kernels on
tensors of the same shapes, and its state can live in fixed buffers, so one step
(forward, the loss gradient, backward, the weight-gradient accumulation) is captured
once as a CUDA graph and replayed T times per sample, one launch instead of ~30. BPTT
cannot do this per step: its backward needs all T steps.

StaticStep is that step written on fixed buffers: the input is copied into `x`, the
membranes and traces are updated in place, the weight and bias gradients are added
in place to `.grad` (per step: a graph cannot hold a growing list of pending rows as
nn._deferred does), the output is added to `out_sum` and the step's loss to
`loss_sum`. Nothing it reads or writes changes address between calls, which is what
a replay needs. What happens once per call stays outside the graph, eagerly: a
WSLinear's standardized weight is refreshed into its fixed buffer before the replays
and its gathered gradient sent through the standardization after them (as nn.ws's
hoisting does); a Dropout draws the sequence's mask into its buffer, from the same
generator calls as the eager path; a RecurrentLIF's previous spikes start at zero
(W 0 = 0 and a zero trace: the same numbers as the eager path's first step, which
skips the recurrent synapse). The same code runs eagerly (capture=False) on any device; the CPU
tests compare it with the autograd path in float64, so on a GPU only the capture
itself is new.

A captured step is kept for the model (beside it, in _STEPS, not on it) per input shape,
dtype, T, loss_alpha, the layers' settings and the addresses of the parameters and their
.grad; anything else captures again. Up to _KEEP steps are kept per model, the least
recently used dropped first. Under cuda_graph=True, train_step zeroes gradients in place
(optimizer.zero_grad(set_to_none=False)) and gives a parameter without one a zero
.grad, since the graph writes into those tensors.
"""
import collections
import weakref

import torch
import torch.nn.functional as F

from .. import _loss, ops
from . import _chain
from ._autograd import bias_grad, conv_grads
from ._state import set_state
from .ws import standardize_backward

# Captured steps kept per model, most recent last: a data set whose size is not a multiple of the
# batch ends every epoch on a smaller batch, and evicting on every shape change would capture twice
# per epoch. Each kept step holds one time step's buffers (and its graph's memory pool). They live
# here, not on the model, so that copy.deepcopy / pickle / torch.save of a model never meet a CUDA
# graph (which cannot be copied) and a copy starts without them; they go with the model.
_KEEP = 4
# The training modes whose step is local in time (captured once, replayed T times).
MODES = ("ottt_a", "sltt")
_STEPS = weakref.WeakKeyDictionary()


def kept_steps(model):
    """The model's captured steps (least recently used first); empty if none."""
    return list(_STEPS.get(model, {}).values())


class _Synapse:
    """A Linear / Conv2d (sWS or not) on fixed buffers: its trace (OTTT), its weight (a WS synapse's
    W_hat in a buffer refreshed each call, with its gradient gathered in another), its gradient targets."""

    def __init__(self, m, conv=False):
        self.m, self.conv = m, conv
        self.ws = _chain._is_ws(m)
        self.decay = m._checked_decay() if m.mode == "ottt" and m.trace else None
        self.trace = self.w_hat = self.w_hat_grad = self.stats = None
        self.touched = False  # its trace was updated this call (a recurrent synapse's is not at T = 1)

    def settings(self):
        return self.decay, self.ws and (self.m.eps, self.m.gain is not None)

    def params(self):
        m = self.m
        return [p for p in (m.weight, m.bias, m.gain if self.ws else None) if p is not None]

    def weight(self):
        return self.w_hat if self.ws else self.m.weight

    def refresh(self):
        """Once per call, before the steps: W_hat into its buffer, its gradient buffer zeroed."""
        if not self.ws:
            return
        w_hat, mean, scale = self.m.standardized_without_graph()
        if self.w_hat is None:
            self.w_hat, self.w_hat_grad = w_hat, torch.zeros_like(w_hat)
        else:
            self.w_hat.copy_(w_hat)
            self.w_hat_grad.zero_()
        self.stats = (mean, scale)

    def settle(self):
        """Once per call, after the steps: W_hat's gradient through the standardization into .grad."""
        if self.ws:
            m = self.m
            grad_w, grad_gain = standardize_backward(m.weight, m.gain, *self.stats, self.w_hat_grad)
            m.weight.grad.add_(grad_w)
            if m.gain is not None:
                m.gain.grad.add_(grad_gain)

    def reset(self):
        if self.trace is not None:
            self.trace.zero_()
        self.touched = False

    def source(self, h):
        """What this step's weight gradient multiplies: the trace, updated in place (OTTT), or h."""
        self.touched = True
        if self.decay is None:
            return h
        if self.trace is None:
            self.trace = torch.zeros_like(h)
        ops._Compiled.trace_update_(self.trace, h, self.decay)
        return self.trace

    def forward(self, h):
        m = self.m
        if self.conv:
            return F.conv2d(h, self.weight(), m.bias, m.stride, m.padding, m.dilation, m.groups)
        return F.linear(h, self.weight(), m.bias)

    def backward(self, g, a, below):
        """grad_W += g^T a, grad_b += sum_rows g, in place; g W when a layer below needs it (for a
        convolution the same with convolution_backward)."""
        m = self.m
        w_grad = self.w_hat_grad if self.ws else m.weight.grad
        if self.conv:
            has_bias = m.bias is not None
            gx, gw, gb = conv_grads(g, a, self.weight(), has_bias, m.stride, m.padding, m.dilation, m.groups, below)
            w_grad.add_(gw)
            if has_bias:
                m.bias.grad.add_(gb)
            return gx
        g2 = g.reshape(-1, g.shape[-1])
        w_grad.addmm_(g2.t(), a.reshape(-1, a.shape[-1]))
        if m.bias is not None:
            m.bias.grad.add_(bias_grad(g2).to(m.bias.dtype))
        return g.matmul(self.weight()) if below else None

    def write_back(self):
        if self.trace is not None and self.touched:
            set_state(self.m, "a_hat", self.trace.clone())
            set_state(self.m, "_a_scale", 1.0)


class _Neuron:
    """An LIF with its membrane in a fixed buffer (settings read once, as the eager path does at a
    sequence's first step)."""

    def __init__(self, m):
        self.m, self.args, self.rest, self.v = m, m._step_args(), m.v_reset or 0.0, None

    def settings(self):
        return self.args

    def reset(self):
        if self.v is not None:
            self.v.fill_(self.rest)

    def forward(self, h, needs_grad):
        if self.v is None:
            self.v = torch.full_like(h, self.rest)
        spike, v_next, hh, _ = ops._Compiled.lif_step_fwd(h, self.v, None, None, *self.args, needs_grad)
        self.v.copy_(v_next)
        return spike, hh

    def backward(self, g, hh):
        return _chain.lif_backward((hh, self.args), g)

    def write_back(self):
        set_state(self.m, "v", self.v.clone())


class _Mask:
    """A Dropout's sequence mask in a fixed buffer, drawn at each call's start (from the first
    call on: its shape comes from the first step) by Dropout.draw_mask, as the eager path draws it."""

    def __init__(self, m):
        self.m, self.active = m, m.training and m.p > 0.0
        self.mask = self.cast = None  # float32 as the eager Dropout keeps it; in the activations' dtype

    def settings(self):
        return self.active and self.m.p

    def reset(self):
        if self.active and self.mask is not None:
            self.mask.copy_(self.m.draw_mask(self.mask.shape, self.mask.device))
            self.cast.copy_(self.mask)

    def forward(self, h):
        if not self.active:
            return h
        if self.mask is None:  # the first run: drawn where the eager path draws it
            self.mask = self.m.draw_mask(h.shape, h.device)
            self.cast = self.mask.to(h.dtype)
        return h * self.cast

    def backward(self, g):
        return g * self.cast if self.active else g

    def write_back(self):
        if self.active:
            self.m.mask = self.mask.clone()


class _Recurrent:
    """RecurrentLIF: I = F x + W s_prev + b, s = mask * LIF(I), s_prev <- s; s_prev starts at zero."""

    def __init__(self, m):
        self.m = m
        self.input, self.recurrent = _Synapse(m.input), _Synapse(m.recurrent)
        self.neuron, self.mask = _Neuron(m.neuron), _Mask(m.dropout)
        self.s_prev = None

    def parts(self):
        return self.input, self.recurrent, self.neuron, self.mask

    def reset(self):
        for p in self.parts():
            p.reset()
        if self.s_prev is not None:
            self.s_prev.zero_()

    def forward(self, h):
        a_in = self.input.source(h)
        current = self.input.forward(h)
        if self.s_prev is None:
            self.s_prev = torch.zeros_like(current)
        # SLTT's source is s_prev itself, which this step overwrites before its backward: a copy.
        a_rec = self.recurrent.source(self.s_prev if self.recurrent.decay is not None else self.s_prev.clone())
        current = current + self.recurrent.forward(self.s_prev)
        spike, hh = self.neuron.forward(current, True)
        s = self.mask.forward(spike)
        self.s_prev.copy_(s)
        return s, (a_in, a_rec, hh)

    def backward(self, g, saved, below):
        a_in, a_rec, hh = saved
        g = self.neuron.backward(self.mask.backward(g), hh)
        self.recurrent.backward(g, a_rec, False)  # s_prev entered detached: nothing through time
        return self.input.backward(g, a_in, below)

    def write_back(self, T):
        self.input.write_back()
        if T > 1:  # the eager path first runs the recurrent synapse at the second step
            self.recurrent.write_back()
        self.neuron.write_back()
        self.mask.write_back()
        set_state(self.m, "s_prev", self.s_prev.clone())


def _slot(m, kind):
    if kind in ("linear", "conv"):
        return _Synapse(m, kind == "conv")
    if kind == "lif":
        return _Neuron(m)
    if kind == "rlif":
        return _Recurrent(m)
    if kind == "dropout":
        return _Mask(m)
    return None  # stateless: Flatten, Identity, Scale, pooling


def _synapses(slots):
    for s in slots:
        if isinstance(s, _Synapse):
            yield s
        elif isinstance(s, _Recurrent):
            yield s.input
            yield s.recurrent


def _slot_settings(slot):
    if slot is None:
        return None
    if isinstance(slot, _Recurrent):
        return tuple(p.settings() for p in slot.parts())
    return slot.settings()


class StaticStep:
    """One time step of `layers` (checked by _chain.check) on fixed buffers. reset() starts a
    sequence (and does the once-per-call work before the steps), settle() ends it; run() reads
    self.x and self.onehot / self.y_index, updates the states, the gradients, out_sum and loss_sum."""

    def __init__(self, layers, slots, x_example, T, loss_alpha):
        self.layers, self.slots = layers, slots  # slots: _slots(layers), fresh
        self.kinds, self.grad_from = _chain.layer_kinds(layers)
        self.T, self.alpha = T, float(loss_alpha)
        self.x = torch.empty_like(x_example, memory_format=torch.contiguous_format)
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
        """A new sequence: states to rest, masks drawn, W_hat refreshed (in layer order, eagerly)."""
        for slot in self.slots:
            if slot is not None:
                slot.reset()
        for syn in _synapses(self.slots):
            syn.refresh()
        if self.out_sum is not None:
            self.out_sum.zero_()
            self.loss_sum.zero_()

    def settle(self):
        """After the steps: the WSLinear weights' gradients through the standardization."""
        for syn in _synapses(self.slots):
            syn.settle()

    def write_back(self):
        """The layers' states, as the eager path leaves them after T steps."""
        for slot in self.slots:
            if isinstance(slot, _Recurrent):
                slot.write_back(self.T)
            elif slot is not None:
                slot.write_back()

    @torch.no_grad()  # everything here is written out: no autograd graph (nor its saved tensors in a capture)
    def run(self):
        h, saved = self.x, []
        for i, (m, kind, slot) in enumerate(zip(self.layers, self.kinds, self.slots)):
            if kind in ("linear", "conv"):
                saved.append(slot.source(h))
                h = slot.forward(h)
            elif kind == "lif":
                h, hh = slot.forward(h, i > self.grad_from)
                saved.append(hh)
            elif kind == "rlif":
                h, s = slot.forward(h)
                saved.append(s)
            elif kind == "dropout":
                saved.append(None)
                h = slot.forward(h)
            elif kind == "scale":
                saved.append(m.c)
                h = h * m.c
            elif kind == "pool":
                saved.append(h)
                h = m(h)
            else:
                saved.append(h.shape)
                h = m(h)
        g = self._loss(h)
        for i in range(len(self.layers) - 1, self.grad_from - 1, -1):
            kind, slot, s = self.kinds[i], self.slots[i], saved[i]
            below = i > self.grad_from
            if kind in ("linear", "conv"):
                g = slot.backward(g, s, below)
            elif kind == "lif":
                g = slot.backward(g, s)
            elif kind == "rlif":
                g = slot.backward(g, s, below)
            elif kind == "dropout":
                g = slot.backward(g)
            elif kind == "scale":
                g = g * s
            elif kind == "pool":
                g = _chain.pool_backward(self.layers[i], s, g)
            else:
                g = g.reshape(s)

    def _loss(self, u):
        """Adds the step's output and loss to out_sum / loss_sum; returns d loss / d u (the same
        functions, ottt_cuda._loss, as train_step's own loop)."""
        _loss.check_step_output(u)
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


def _slots(layers):
    kinds, _ = _chain.layer_kinds(layers)
    return [_slot(m, k) for m, k in zip(layers, kinds)]


def _key(layers, slots, x0, T, loss_alpha, y):
    """What a captured step depends on: shapes, the layers and the settings their slots read once,
    the addresses of the parameters and their .grad (a replay reads and writes exactly those)."""
    ptrs = [(p.data_ptr(), p.grad.data_ptr()) for p in _params(slots)]
    return (tuple(x0.shape), x0.dtype, x0.device, T, float(loss_alpha), tuple(y.shape), tuple(id(m) for m in layers),
            tuple(_slot_settings(s) for s in slots), tuple(ptrs))


def check_request(model, x, mode, amp, scaler, chunk, k):
    """train_step(cuda_graph=True)'s arguments: a clear error for anything it cannot capture."""
    if mode not in MODES:
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


def _params(slots):
    return [p for syn in _synapses(slots) for p in syn.params()]


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
    slots = _slots(layers)  # their settings key the capture; they serve a new step if one is built
    for p in _params(slots):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    key = _key(layers, slots, x0, T, loss_alpha, y)
    steps = _STEPS.get(model)
    if steps is None:
        steps = _STEPS[model] = collections.OrderedDict()
    step = steps.pop(key, None)
    if step is None:
        step = StaticStep(layers, slots, x0, T, loss_alpha)
        step.graph = None
        while len(steps) >= _KEEP:
            steps.popitem(last=False)
    steps[key] = step  # the settings and addresses it was built (and captured) for
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
    step.settle()
    step.write_back()
    return step.loss_sum.clone(), step.out_sum.clone()


def _capture(step, x0):
    """Warm up on a side stream (buffers made, lazy initialisations, cuBLAS workspaces), then
    capture one step. The warm-up's effect on .grad and on the random generators (dropout masks)
    is undone; the caller resets the states."""
    params = _params(step.slots)
    saved = [p.grad.clone() for p in params]
    rng = torch.get_rng_state(), torch.cuda.get_rng_state()
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
    torch.set_rng_state(rng[0])
    torch.cuda.set_rng_state(rng[1])
    step.graph = graph
