"""OTTT_A's time step for a plain chain of layers, run without autograd (issue 11).

At batch 1 a time step of a small net is a few tiny kernels, and autograd's bookkeeping
around them (a graph node per layer, saved tensors, the engine's walk, the Python
autograd.Functions' forward and backward) costs more than they do. Under OTTT_A the
step's backward is local to the step: nothing of earlier steps is in the graph. For an
nn.Sequential made only of

    ottt_cuda.nn.Linear, ottt_cuda.nn.LIF (step_mode "s", mode "ottt" or "sltt") and the
    shape-only nn.Flatten / nn.Identity,

that backward is short enough to write out, layer by layer in reverse:

    Linear:  grad_W += g^T (c a), grad_b += sum_rows g   (deferred: _deferred)
             g <- g W                                    (not below the first Linear)
    LIF:     g <- surrogate'(h - v_th) g                 (the step's backward kernel on h)
    Flatten: g <- g viewed in the input's shape

which is what LinearTrace, the LIF's _LIFStep and autograd compute on the same path:
the same kernels and GEMMs in the same order, hence the same numbers (the float64
tests compare them). A linked LIF updates its synapse's trace in its kernel pass as in
nn._handoff, handed over directly (the chain knows who reads the spikes).

Used by train_step's OTTT_A and SLTT loops only (inside online_steps with deferred weight
gradients), and only where nothing could observe the difference: no module hooks
(the model's, its layers' or global ones), no gradient hooks on the parameters, every
parameter a leaf that requires grad in the input's dtype, no autocast, no input that
requires grad, the compiled kernels serving the input, no torch.compile tracing.
Anything else takes the autograd path (plan() returns None). `enabled = False` turns
it off (tests compare the two).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as _module

from .. import _validation, ops
from . import _fast, _handoff
from ._autograd import _no_hooks
from ._state import set_state

enabled = True

_SHAPE_ONLY = (nn.Flatten, nn.Identity)
# The layer modes whose step backward is local in time: OTTT (weight gradient with the trace) and
# SLTT (with the input itself; the synapse's _grad_source knows which).
_MODES = ("ottt", "sltt")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks", "_global_forward_hooks_always_called")


def _no_module_hooks(m):
    return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def plan(model, x):
    """A Chain running `model`'s time steps on inputs like x, or None where the autograd path must run."""
    if not enabled:
        return None
    layers, _reason = check(model, x, deferred=True)
    return None if layers is None else Chain(layers)


def check(model, x, deferred):
    """(layers, None) when `model`'s steps on inputs like x may run as a chain, else (None, why), `why`
    naming the module or setting in the way. deferred: the Linear layers must hold a
    _deferred.DeferredWeightGrad (train_step's online_steps(defer_weight_grads=True))."""
    from .lif import LIF
    from .synapse import Linear

    if type(model) is not nn.Sequential:
        return None, f"the model is a {type(model).__name__}, not a torch.nn.Sequential"
    if not _no_module_hooks(model):
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
    layers = list(model)
    n_linear = 0
    for i, m in enumerate(layers):
        name = f"module {i} ({type(m).__name__})"
        if not _no_module_hooks(m):
            return None, f"{name} has forward or backward hooks"
        if type(m) is Linear:
            for pname, p in (("weight", m.weight), ("bias", m.bias)):
                if p is None:
                    continue
                if not (p.requires_grad and _no_hooks(p)):
                    return None, f"{name}.{pname} does not require grad, is not a leaf, or has gradient hooks"
                if p.dtype != x.dtype or p.device != x.device:
                    return None, f"{name}.{pname} is {p.dtype} on {p.device}, the input {x.dtype} on {x.device}"
            if m.mode not in _MODES or m.step_mode != "s":
                return None, f"{name} runs mode {m.mode!r}, step_mode {m.step_mode!r}"
            if deferred and m._deferred is None:
                return None, f"{name} is not inside online_steps(defer_weight_grads=True)"
            n_linear += 1
        elif type(m) is LIF:
            if m.mode not in _MODES or m.step_mode != "s":
                return None, f"{name} runs mode {m.mode!r}, step_mode {m.step_mode!r}"
        elif type(m) not in _SHAPE_ONLY:
            return None, (f"{name} is not an ottt_cuda.nn.Linear, ottt_cuda.nn.LIF, nn.Flatten or nn.Identity "
                          "(subclasses are not taken either)")
    if not n_linear:
        return None, "the model has no ottt_cuda.nn.Linear layer (no weight to train)"
    return layers, None


def layer_kinds(layers):
    """Per layer of a checked chain "linear", "lif" or "shape" (Flatten / Identity), and the index
    of the first Linear: below it nothing needs a gradient (the input does not require one)."""
    from .lif import LIF

    kinds = ["lif" if type(m) is LIF else "linear" if hasattr(m, "weight") else "shape" for m in layers]
    return kinds, kinds.index("linear")


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
        # synapse the trace it updates in its kernel pass; no Scale between them, none is in a chain).
        in_chain = {id(m) for m in layers}
        self.links = [m._trace_link if k == "lif" and m._trace_link is not None and m._trace_link.scale == 1.0
                      and id(m._trace_link.consumer) in in_chain else None for m, k in zip(layers, self.kinds)]
        self.checked = False
        self.saved = None

    @torch.no_grad()  # written out: no autograd graph is built (nor tensors saved for one)
    def forward(self, x):
        saved = []
        handed = {}  # consumer synapse -> the trace its LIF computed this step
        for i, (m, kind) in enumerate(zip(self.layers, self.kinds)):
            if kind == "linear":
                if not self.checked:
                    m._check_input(x, 1)
                trace = handed.pop(m, None)
                if trace is not None:  # as nn._handoff's claim: adopt the LIF's trace of x
                    a = trace.view(x.shape)
                    set_state(m, "a_hat", a)
                    set_state(m, "_a_scale", 1.0)
                    c = 1.0
                else:
                    a, c = m._grad_source(x, True, inplace=True)
                saved.append((a, c))
                x = F.linear(x, m.weight, m.bias)
            elif kind == "lif":
                x, h = self._lif(m, x, self.links[i], handed, needs_grad=i > self.grad_from)
                saved.append(h)
            else:
                saved.append(x.shape)
                x = m(x)
        self.checked = True
        self.saved = saved
        return x

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
            handed[link.consumer] = trace_next
        return spike, (h, args)

    @torch.no_grad()
    def backward(self, g):
        saved, self.saved = self.saved, None
        for i in range(len(self.layers) - 1, self.grad_from - 1, -1):
            m, kind, s = self.layers[i], self.kinds[i], saved[i]
            if kind == "linear":
                a, c = s
                m._deferred.add(m.weight, m.bias, g, a, c)
                if i > self.grad_from:
                    g = g.matmul(m.weight)
            elif kind == "lif":
                h, args = s
                tau, v_th, _v_reset, decay_input, _td, surrogate, alpha = args
                g = ops._Compiled.lif_step_bwd(g, h, None, tau, v_th, decay_input, surrogate, alpha)
            else:
                g = g.view(s) if g.is_contiguous() else g.reshape(s)
