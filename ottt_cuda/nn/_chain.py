"""OTTT_A's time step for a plain chain of layers, run without autograd.

At batch 1 a time step of a small net is a few tiny kernels, and autograd's bookkeeping
around them (a graph node per layer, saved tensors, the engine's walk, the Python
autograd.Functions' forward and backward) costs more than they do. Under OTTT_A the
step's backward is local to the step: nothing of earlier steps is in the graph. For an
nn.Sequential made only of the exact types

    ottt_cuda.nn.Linear / WSLinear, Conv2d / WSConv2d, LIF, RecurrentLIF, Dropout, Scale (step_mode
    "s", mode "ottt" or "sltt"), nn.AvgPool2d / nn.AdaptiveAvgPool2d and the shape-only
    nn.Flatten / nn.Identity,

or a model class that names such layers (or nn.Sequentials of them) in its own `_ottt_chain`
(its forward being their composition, as models.R400 and models.VGGWS), that backward is short
enough to write out, layer by layer in reverse:

    Linear:  grad_W += g^T (c a), grad_b += sum_rows g   (deferred: _deferred)
             g <- g W                                    (a WS synapse's W: its hoisted standardized weight)
    Conv2d:  as Conv2dTrace: one convolution_backward with the trace as the input, into .grad
    Scale:   g <- c g;  pooling: its input gradient (avg_pool2d_backward)
    LIF:     g <- surrogate'(h - v_th) g                 (the step's backward kernel on h)
    Dropout: g <- g * mask                               (the sequence's mask)
    RecurrentLIF: the mask, the LIF, then the input synapse as a Linear and the recurrent one's
             weight gradient only (s[t-1] enters detached: nothing flows through time)
    Flatten: g <- g viewed in the input's shape

(not below the first layer with weights), which is what LinearTrace, the LIF's _LIFStep and
autograd compute on the same path: the same kernels and GEMMs in the same order, hence the same
numbers (the float64 tests compare them). A linked LIF updates its synapse's trace in its
kernel pass as in nn._handoff, handed over directly (the chain knows who reads the spikes).

Used by train_step's OTTT_A, SLTT and OTTT_O loops only (inside online_steps with deferred weight
gradients; OTTT_O flushes them and re-standardizes the sWS weights at every step), and only where
nothing could observe the difference: no module hooks (the model's, its layers' or global ones),
no gradient hooks on the parameters, every parameter a leaf that requires grad in the input's
dtype, no autocast, no input that requires grad, the compiled kernels serving the input, no
torch.compile tracing. Anything else takes the autograd path (plan() returns None). `enabled = False` turns
it off (tests compare the two). A chain with convolutions keeps autograd too unless
`conv_chains` (no measured gain on the CPU; not yet run on a GPU); the CUDA-graph step takes them.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as _module

from .. import _validation, ops
from . import _deferred, _fast, _handoff
from ._autograd import _no_hooks, conv_grads
from ._state import set_state

enabled = True
conv_chains = False  # True: train_step takes chains with convolutions too (tests)

# The layer modes whose step backward is local in time: OTTT (weight gradient with the trace) and
# SLTT (with the input itself; the synapse's _grad_source knows which).
_MODES = ("ottt", "sltt")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks", "_global_forward_hooks_always_called")


def _no_module_hooks(m):
    return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def plan(model, x, per_step=False):
    """A Chain running `model`'s time steps on inputs like x, or None where the autograd path must run.
    per_step=False: called inside online_steps(defer_weight_grads=True) and hoisted(model), which stay
    for the whole sequence (train_step's OTTT_A / SLTT loop); True: the caller enters them around each
    step itself (its OTTT_O loop: the weights change after every step)."""
    if not enabled:
        return None
    layers, _reason = check(model, x, deferred=not per_step)
    if layers is None:
        return None
    if not conv_chains and any(_kind(m) == "conv" for m in layers):
        # On the CPU a convolutional step is its convolutions (~95% of VGG-11's at batch 1), so writing
        # out the rest of its backward gains nothing there; on a GPU, where launch overhead would make it
        # pay, it has not run yet. So it keeps autograd (the CUDA-graph step takes it).
        return None
    return Chain(layers)


def check(model, x, deferred):
    """(layers, None) when `model`'s steps on inputs like x may run as a chain, else (None, why), `why`
    naming the module or setting in the way. deferred: train_step's OTTT_A / SLTT loop, already inside
    online_steps(defer_weight_grads=True) and hoisted(model) (the synapses hold a
    _deferred.DeferredWeightGrad, the sWS weights are hoisted: checked here); False: a caller that sets up
    its own weights and gradient buffers, or enters those two contexts around each step itself (the
    CUDA-graph step, nn._graph; the OTTT_O loop)."""
    layers, containers = _layers_of(model)
    if layers is None:
        return None, (f"the model is a {type(model).__name__}, not a torch.nn.Sequential (nor a model that "
                      "names its layers in _ottt_chain, as models.R400)")
    if not all(_no_module_hooks(c) for c in containers):
        return None, "the model has forward or backward hooks"
    if any(getattr(_module, name, None) for name in _GLOBAL_HOOKS):
        return None, "global module hooks are registered (torch.nn.modules.module.register_module_*_hook)"
    if not torch.is_grad_enabled():
        return None, "gradients are disabled (torch.no_grad)"
    if x.requires_grad:
        return None, "the input x requires grad"
    if torch.is_autocast_enabled(x.device.type):
        return None, "autocast is on"
    if not _fast.compiled(x):  # False under torch.compile tracing too
        return None, f"the compiled kernels do not serve this input (backend {_backend_name(x)!r})"
    n_weighted = 0
    for i, m in enumerate(layers):
        name = f"module {i} ({type(m).__name__})"
        kind = _kind(m)
        if kind is None:
            return None, f"{name} is not one of {_TAKEN} (subclasses are not taken either)"
        for j, sub in enumerate(m.modules()):
            if not _no_module_hooks(sub):
                return None, f"{name}{'' if j == 0 else ' (a submodule)'} has forward or backward hooks"
            if hasattr(sub, "mode") and (sub.mode not in _MODES or sub.step_mode != "s"):
                return None, f"{name} runs mode {sub.mode!r}, step_mode {sub.step_mode!r}"
        synapses = [("", m)] if kind in ("linear", "conv") else [(".input", m.input), (".recurrent", m.recurrent)] \
            if kind == "rlif" else []
        for where, syn in synapses:
            why = _synapse_problem(f"{name}{where}", syn, x, deferred)
            if why is not None:
                return None, why
        if kind == "rlif" and (_kind(m.neuron) != "lif" or _kind(m.dropout) != "dropout"):
            return None, f"{name} holds a neuron or a dropout of another type"
        n_weighted += kind in _WEIGHTED
    if not n_weighted:
        return None, "the model has no ottt_cuda.nn.Linear layer (no weight to train)"
    return layers, None


_TAKEN = ("ottt_cuda.nn.Linear / WSLinear / Conv2d / WSConv2d / LIF / RecurrentLIF / Dropout / Scale, "
          "nn.Flatten, nn.Identity, nn.AvgPool2d, nn.AdaptiveAvgPool2d")
_WEIGHTED = ("linear", "conv", "rlif")


def _layers_of(model):
    """(layers a step runs in order, the containers holding them): an nn.Sequential's, or those a
    model class names in its own `_ottt_chain` (its forward being their composition, e.g. models.R400),
    an nn.Sequential named there standing for its layers (models.VGGWS); (None, None) otherwise."""
    if type(model) is nn.Sequential:
        return list(model), [model]
    names = type(model).__dict__.get("_ottt_chain")
    if names is None:
        return None, None
    layers, containers = [], [model]
    for n in names:
        m = getattr(model, n)
        if type(m) is nn.Sequential:
            layers += list(m)
            containers.append(m)
        else:
            layers.append(m)
    return layers, containers


def _is_ws(m):
    from .ws import WSConv2d, WSLinear

    return type(m) in (WSLinear, WSConv2d)


def _kind(m):
    """The chain's name for the exact type of m (subclasses may change what a step does): None if not taken."""
    global _KINDS
    if _KINDS is None:
        from .lif import LIF
        from .misc import Dropout, Scale
        from .recurrent import RecurrentLIF
        from .synapse import Conv2d, Linear
        from .ws import WSConv2d, WSLinear

        _KINDS = {Linear: "linear", WSLinear: "linear", Conv2d: "conv", WSConv2d: "conv", LIF: "lif",
                  RecurrentLIF: "rlif", Dropout: "dropout", Scale: "scale", nn.Flatten: "shape", nn.Identity: "shape",
                  nn.AvgPool2d: "pool", nn.AdaptiveAvgPool2d: "pool"}
    return _KINDS.get(type(m))


_KINDS = None


def _synapse_problem(name, m, x, deferred):
    """Why the chain cannot compute the weight gradients of synapse m itself (None: it can)."""
    params = [("weight", m.weight), ("bias", m.bias)] + ([("gain", m.gain)] if _is_ws(m) else [])
    for pname, p in params:
        if p is None:
            continue
        if not (p.requires_grad and _no_hooks(p)):
            return f"{name}.{pname} does not require grad, is not a leaf, or has gradient hooks"
        if p.dtype != x.dtype or p.device != x.device:
            return f"{name}.{pname} is {p.dtype} on {p.device}, the input {x.dtype} on {x.device}"
    if deferred and _kind(m) == "linear" and m._deferred is None:
        return f"{name} is not inside online_steps(defer_weight_grads=True)"
    if deferred and _is_ws(m) and (m._hoisted is None or not m._hoisted[0]):
        return f"{name}'s standardized weight is not hoisted (nn.ws.hoisted)"
    return None


def layer_kinds(layers):
    """Per layer of a checked chain its kind ("linear", "conv", "lif", "rlif", "dropout", "scale", "pool"
    or "shape": Flatten / Identity), and the index of the first layer with weights: below it nothing needs a gradient (the
    input does not require one)."""
    kinds = [_kind(m) for m in layers]
    return kinds, next(i for i, k in enumerate(kinds) if k in _WEIGHTED)


def _backend_name(x):
    from .. import _backend

    try:
        return _backend.get_backend(x.device.type)
    except Exception:  # pragma: no cover - only for the message
        return "?"


class Chain:
    """forward(x) -> the step's output (no graph); backward(g) adds the step's weight gradients
    (deferred) given g = d loss / d output. One backward after each forward, before the next."""

    def __init__(self, layers):
        self.layers = layers
        self.kinds, self.grad_from = layer_kinds(layers)
        # The link of each LIF whose consumer synapse is in the chain (nn._handoff: it hands that
        # synapse the trace it updates in its kernel pass; the synapse's input is scale * spikes).
        in_chain = {id(m) for m in layers}
        self.links = [m._trace_link if k == "lif" and m._trace_link is not None
                      and id(m._trace_link.consumer) in in_chain else None for m, k in zip(layers, self.kinds)]
        self.checked = False
        self.saved = None

    @torch.no_grad()  # written out: no autograd graph is built (nor tensors saved for one)
    def forward(self, x):
        saved = []
        handed = {}  # consumer synapse -> (the trace its LIF computed this step, the scale on the way)
        for i, (m, kind) in enumerate(zip(self.layers, self.kinds)):
            if kind in ("linear", "conv"):
                x, s = self._synapse(m, kind, x, handed.pop(m, None))
            elif kind == "lif":
                x, s = self._lif(m, x, self.links[i], handed, needs_grad=i > self.grad_from)
            elif kind == "rlif":
                x, s = self._recurrent(m, x)
            elif kind == "dropout":
                s = _mask(m, x)
                x = m.step(x)
            elif kind == "scale":
                s = m.c
                x = x * m.c
            elif kind == "pool":
                s = x
                x = m(x)
            else:
                s = x.shape
                x = m(x)
            saved.append(s)
        self.checked = True
        self.saved = saved
        return x

    def _synapse(self, m, kind, x, handed):
        """The synapse's output and what its backward needs: (weight, trace or input, its scale)."""
        if not self.checked:
            m._check_input(x, 1)
        if handed is not None:  # as nn._handoff's claim: adopt the LIF's trace of the spikes
            trace, c = handed
            a = trace.view(x.shape)
            set_state(m, "a_hat", a)
            set_state(m, "_a_scale", c)
        else:
            a, c = m._grad_source(x, True, inplace=True)
        w, b = m._weights()  # a WS synapse's hoisted standardized weight
        out = F.linear(x, w, b) if kind == "linear" else F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)
        return out, (w, a, c)

    def _lif(self, m, x, link, handed, needs_grad):
        if not self.checked:
            _validation.tensor(x, "x")
        v = m._v_for(x)
        args = m._step_args()
        offered = _handoff.offer(link, x, "s") if link is not None else None
        trace_in = None
        if offered is not None:  # the kernel updates the consumer's trace too, with its decay
            trace_in, decay = offered
            args = args[:4] + (decay,) + args[5:]
        spike, v_next, h, trace_next = ops._Compiled.lif_step_fwd(x, v, trace_in, None, *args, needs_grad)
        set_state(m, "v", v_next)
        if offered is not None:
            handed[link.consumer] = (trace_next, link.scale)
        return spike, (h, args)

    def _recurrent(self, m, x):
        """RecurrentLIF.step written out: I = F x (+ W s_prev), s = dropout(LIF(I)); s_prev <- s."""
        current, fwd_in = self._synapse(m.input, "linear", x, None)
        fwd_rec = None
        if m.s_prev is not None:  # from the second step (see RecurrentLIF._cell)
            rec, fwd_rec = self._synapse(m.recurrent, "linear", m.s_prev, None)
            current = current + rec
        spike, lif = self._lif(m.neuron, current, None, None, needs_grad=True)
        mask = _mask(m.dropout, spike)
        s = m.dropout.step(spike)
        set_state(m, "s_prev", s)  # no graph here: detached already
        return s, (fwd_in, fwd_rec, lif, mask)

    @torch.no_grad()
    def backward(self, g):
        saved, self.saved = self.saved, None
        for i in range(len(self.layers) - 1, self.grad_from - 1, -1):
            m, kind, s = self.layers[i], self.kinds[i], saved[i]
            saved[i] = None  # freed as soon as used, as autograd frees a node's saved tensors
            below = i > self.grad_from  # a layer below needs this one's input gradient
            if kind == "linear":
                g = _linear_backward(m, s, g, below)
            elif kind == "conv":
                g = _conv_backward(m, s, g, below)
            elif kind == "lif":
                g = lif_backward(s, g)
            elif kind == "rlif":
                fwd_in, fwd_rec, lif, mask = s
                g = lif_backward(lif, g if mask is None else g * mask)
                if fwd_rec is not None:  # s_prev entered detached: W's gradient only, nothing through time
                    _linear_backward(m.recurrent, fwd_rec, g, False)
                g = _linear_backward(m.input, fwd_in, g, below)
            elif kind == "dropout":
                g = g if s is None else g * s
            elif kind == "scale":
                g = g * s
            elif kind == "pool":
                g = pool_backward(m, s, g)
            else:
                g = g.view(s) if g.is_contiguous() else g.reshape(s)


def _mask(dropout, x):
    """The multiplier Dropout.step applies to x (drawing the sequence's mask at its first step, as
    step does), or None where it is the identity."""
    if not dropout.training or dropout.p == 0.0:
        return None
    return dropout._mask_for(x)


def _linear_backward(m, saved, g, below):
    """Defer the step's weight (and bias) gradient g^T (c a); return g W when a layer below needs it."""
    w, a, c = saved
    m._deferred.add(w, m.bias, g, a, c)
    return g.matmul(w) if below else None


def _conv_backward(m, saved, g, below):
    """The weight (and bias) gradient of the step into .grad, as Conv2dTrace's backward computes it:
    one convolution_backward with the trace as the input; g's input gradient when a layer below needs it."""
    w, a, c = saved
    has_bias = m.bias is not None
    gx, gw, gb = conv_grads(g, a, w, has_bias, m.stride, m.padding, m.dilation, m.groups, below)
    if c != 1.0:  # the convolution ran on a, the trace is c a (_handoff)
        gw = gw.mul_(c)
    _deferred._add_to_grad(w, gw)
    if has_bias:
        _deferred._add_to_grad(m.bias, gb)
    return gx


def pool_backward(m, x, g):
    """The input gradient of average pooling m (nn.AvgPool2d or nn.AdaptiveAvgPool2d) at input x."""
    if type(m) is nn.AdaptiveAvgPool2d:
        return torch.ops.aten._adaptive_avg_pool2d_backward(g, x)
    pair = nn.modules.utils._pair
    return torch.ops.aten.avg_pool2d_backward(g, x, list(pair(m.kernel_size)), list(pair(m.stride or m.kernel_size)),
                                              list(pair(m.padding)), m.ceil_mode, m.count_include_pad,
                                              m.divisor_override)


def lif_backward(saved, g):
    """The LIF step's input gradient from the h and the kernel arguments its forward saved."""
    h, args = saved
    tau, v_th, _v_reset, decay_input, _td, surrogate, alpha = args
    return ops._Compiled.lif_step_bwd(g, h, None, tau, v_th, decay_input, surrogate, alpha)
