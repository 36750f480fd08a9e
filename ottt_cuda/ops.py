"""The public ops. Each one checks its arguments, picks the backend for the
tensor's device (see ottt_cuda._backend) and runs it:

- 'cpu' / 'cuda': the compiled kernels, torch.ops.ottt_cuda.* (autograd and
  fake kernels registered in ottt_cuda._registration);
- 'triton': the Triton kernels, differentiated by the same formulas;
- 'cuda_emu': the CUDA kernels on an emulated device (torch.ops.ottt_cuda_emu.*,
  CPU tensors; ottt_cuda._cuda_emu), differentiated as Triton is;
- 'torch': the pure-PyTorch reference (ottt_cuda.reference).

Per-call cost matters here: OTTT calls these ops once per layer and time step,
often on small tensors (batch 1). So, eagerly on the compiled backends:
- lif_step, trace_update(_) and outer_accumulate_ call the op first and check in
  Python only when it fails: the C++ side checks the tensors and the scalars it
  can (csrc/common.h, csrc/op_inputs.h, csrc/outer_accumulate_common.h, raising
  ValueError/TypeError), the rest is checked inline, and on any error the Python
  checks run and name the bad argument with the same message as on the other
  backends. Unusual input (a mask to broadcast, tensors autograd tracks for the
  in-place ops, a bool where a number goes) takes the checked path directly;
- a differentiable lif_step / lif_multistep runs through a plain
  torch.autograd.Function (_LIFStep, _LIFMultistep) instead of the autograd that
  torch.library.register_autograd wraps around the op, which costs ~80 us per
  call (it rebuilds the 12-argument schema in Python), and calls with nothing
  to differentiate skip that autograd too (_past_autograd); under torch.compile
  the op and its registered autograd are used, as the compiler needs them;
- the ops are looked up once (_Compiled: _C.fast's bindings, without torch.ops'
  boxed call; _Dispatched: the OpOverloads, for the checked paths and
  torch.compile), the automatic backend once per
  device type (set_backend and OTTT_BACKEND are still read at every call).
"""
import math
import os

import torch

from . import _backend, _cuda_emu, _extension, _registration, _validation, reference
from ._registration import backward_lif_multistep, backward_lif_step

if _extension.loaded():
    _registration.register()
if _cuda_emu.loaded():
    _registration.register("ottt_cuda_emu")

_COMPILED_BACKENDS = ("cpu", "cuda")
# Backends that ops.py's autograd Functions differentiate, and whose in-place
# writes are reported to autograd here (their ops have no ADInplaceOrView kernel).
_PLAIN_BACKENDS = ("triton", "cuda_emu")
_BACKEND_ENV = "OTTT_BACKEND"  # read by _backend.get_backend too


def _env_lookup():
    """(get, key) with get(key) OTTT_BACKEND's current value (None when unset).
    os.environ.get costs ~1 us per call (key encoding, the Mapping ABC): more than
    the rest of a fast-path call. CPython's os.environ keeps its encoded items in
    the dict os.environ._data, which every os.environ write updates; that dict is
    read directly where it exists (any CPython), os.environ.get elsewhere."""
    data, encodekey = getattr(os.environ, "_data", None), getattr(os.environ, "encodekey", None)
    if not isinstance(data, dict) or encodekey is None:
        return os.environ.get, _BACKEND_ENV
    return data.get, encodekey(_BACKEND_ENV)


_env_get, _env_key = _env_lookup()
_is_compiling = torch.compiler.is_compiling


def _past_autograd(op):
    """op called below the Autograd dispatch key. lif_step_fwd, lif_multistep_fwd and
    trace_update carry the autograd that torch.library.register_autograd wraps
    around them in Python (_registration.py), which every call enters, even one
    with nothing to differentiate (~8 us at 16 elements, half of the call). The
    wrappers take this path only where that autograd has nothing to do: inside
    _LIFStep/_LIFMultistep.forward (which are the autograd) and for calls whose
    inputs autograd does not track. torch._C._AutoDispatchBelowAutograd is the guard
    that autograd itself (torch/_library/autograd.py) uses for this; where a torch
    lacks it, the op is called as it is."""
    below = getattr(torch._C, "_AutoDispatchBelowAutograd", None)
    if below is None:
        return op

    def call(*args):
        with below():
            return op(*args)
    return call


class _Dispatched:
    """torch.ops.ottt_cuda's OpOverloads, looked up once (each torch.ops attribute
    lookup costs ~0.3 us); None when the extension is not loaded. What the checked
    paths call on the compiled backends: torch.compile traces these (with their
    fake kernels). The forward ops are called past their Python autograd
    (_past_autograd): only for inputs that autograd does not track, or from an
    autograd.Function's forward."""
    if _extension.loaded():
        lif_step_fwd = staticmethod(_past_autograd(torch.ops.ottt_cuda.lif_step_fwd.default))
        lif_step_bwd = torch.ops.ottt_cuda.lif_step_bwd.default
        lif_multistep_fwd = staticmethod(_past_autograd(torch.ops.ottt_cuda.lif_multistep_fwd.default))
        lif_multistep_bwd = torch.ops.ottt_cuda.lif_multistep_bwd.default
        trace_update = staticmethod(_past_autograd(torch.ops.ottt_cuda.trace_update.default))
        trace_update_ = torch.ops.ottt_cuda.trace_update_.default
        outer_accumulate_ = torch.ops.ottt_cuda.outer_accumulate_.default
    else:
        lif_step_fwd = lif_step_bwd = lif_multistep_fwd = lif_multistep_bwd = None
        trace_update = trace_update_ = outer_accumulate_ = None


class _Compiled(_Dispatched):
    """The same ops for the eager fast paths (never traced: _compiled_serves is
    False under torch.compile): ottt_cuda._C.fast's bindings, which call the
    registered op through the C++ dispatcher without torch.ops' boxed call (~2 us
    less per call, ~4 us for the forward ops; csrc/fast_calls.cpp), the forward
    ops past their Python autograd as _past_autograd does."""
    if _extension.loaded():
        _fast = _extension._C.fast
        lif_step_fwd = staticmethod(_fast.lif_step_fwd)
        lif_step_bwd = staticmethod(_fast.lif_step_bwd)
        lif_multistep_fwd = staticmethod(_fast.lif_multistep_fwd)
        lif_multistep_bwd = staticmethod(_fast.lif_multistep_bwd)
        trace_update = staticmethod(_fast.trace_update)
        trace_update_ = staticmethod(_fast.trace_update_)
        outer_accumulate_ = staticmethod(_fast.outer_accumulate_)
        del _fast


def _impl(name):
    if name in _COMPILED_BACKENDS:
        return _Dispatched
    if name == "triton":
        from . import triton as triton_backend

        return triton_backend
    if name == "cuda_emu":
        return _cuda_emu.Ops
    return None


# Whether the automatic backend of a device type is a compiled one: fixed for the
# process (it depends only on what was built and whether triton imports), so it
# is looked up once per device type.
_AUTOMATIC_COMPILED = {}


def _compiled_serves(t):
    """Whether tensor t's op runs the compiled kernels, eagerly (not under
    torch.compile, which traces the checked path): the wrappers' fast path.
    _backend.get_backend's answer, without its ~2 us when no backend is forced
    (set_backend and OTTT_BACKEND are still read at every call)."""
    if not isinstance(t, torch.Tensor) or _Compiled.outer_accumulate_ is None or _is_compiling():
        return False
    if _backend._forced is None and not _env_get(_env_key):
        # is_cpu / is_cuda: plain flags; t.device builds a device object (~0.3 us)
        kind = "cpu" if t.is_cpu else "cuda" if t.is_cuda else t.device.type
        serves = _AUTOMATIC_COMPILED.get(kind)
        if serves is None:
            serves = _AUTOMATIC_COMPILED[kind] = _backend.get_backend(t.device) in _COMPILED_BACKENDS
        return serves
    return _backend.get_backend(t.device) in _COMPILED_BACKENDS


def _bump_version(t):
    """Marks t as changed in place for autograd's saved-tensor check: a Triton kernel
    writes through a pointer, which autograd cannot see (the compiled ops bump it in
    their ADInplaceOrView kernels, csrc/inplace_versions.cpp; the reference's in-place
    torch ops do it themselves). Without it a backward that saved t would silently use
    the new values."""
    torch.autograd.graph.increment_version(t)


def _is_real(value):
    # bool is an int to Python and a float to the op's schema: the checked path refuses it
    return type(value) is float or type(value) is int


class _LIFStep(torch.autograd.Function):
    """lif_step's autograd on the Triton and (eagerly) the compiled kernels; impl
    holds lif_step_fwd / lif_step_bwd with the compiled ops' contract."""
    @staticmethod
    def forward(ctx, impl, x, v, trace, mask, args):
        spike, v_next, h, trace_next = impl.lif_step_fwd(x, v, trace, mask, *args, x.requires_grad)
        ctx.impl = impl
        ctx.args = args
        ctx.save_for_backward(h, mask)
        ctx.mark_non_differentiable(v_next, trace_next)
        # v_next and trace_next are detached (OTTT): None for their gradients, not
        # two zero tensors per call (backward_lif_step takes a None grad_spike too)
        ctx.set_materialize_grads(False)
        return spike, v_next, trace_next

    @staticmethod
    def backward(ctx, grad_spike, _gv, _gt):
        h, mask = ctx.saved_tensors
        tau, v_th, _v_reset, decay_input, _td, surrogate, alpha = ctx.args
        grad_x = backward_lif_step(ctx.impl, grad_spike, h, mask, tau, v_th, decay_input, surrogate, alpha)
        return None, grad_x, None, None, None, None


class _LIFMultistep(torch.autograd.Function):
    """lif_multistep's autograd on the Triton and (eagerly) the compiled kernels."""
    @staticmethod
    def forward(ctx, impl, x_seq, v0, args, detach_reset):
        needs = x_seq.requires_grad or (v0 is not None and v0.requires_grad)
        spike_seq, v_last, h_seq = impl.lif_multistep_fwd(x_seq, v0, *args, needs)
        ctx.impl, ctx.args, ctx.has_v0, ctx.detach_reset = impl, args, v0 is not None, detach_reset
        ctx.save_for_backward(h_seq)
        return spike_seq, v_last

    @staticmethod
    def backward(ctx, grad_spike_seq, grad_v_last):
        (h_seq,) = ctx.saved_tensors
        grad_x, grad_v0 = backward_lif_multistep(ctx.impl, grad_spike_seq, grad_v_last, h_seq, *ctx.args,
                                                 detach_reset=ctx.detach_reset)
        return None, grad_x, grad_v0 if ctx.has_v0 else None, None, None


def lif_step(x, v=None, *, tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0,
             trace=None, trace_decay=None, mask=None):
    """One time step of the LIF neuron, as OTTT runs it.

    h = charge(v, x); spike = H(h - v_th) (* mask); v_next = reset(h, spike).
    Soft reset (v -= v_th) when v_reset is None, hard reset to v_reset otherwise.
    The gradient flows to x only, through the surrogate derivative of H: the
    membrane history and the reset are detached (OTTT). `v=None` is a zero
    membrane. With `trace_decay` given, the trace of the output spikes is updated
    in the same pass (trace None = zeros) and (spike, v_next, trace_next) is
    returned; otherwise (spike, v_next). `mask` (broadcastable to x, e.g. a
    dropout mask) multiplies the spikes. Saved for backward: h, one element per
    neuron (plus the mask, which the caller holds anyway).
    """
    if _lif_step_fast_ok(x, v, tau, v_th, v_reset, decay_input, surrogate, alpha, trace, trace_decay, mask):
        try:
            return _lif_step_compiled(x, _detached(v), tau, v_th, v_reset, decay_input, surrogate, alpha,
                                      _detached(trace), trace_decay, _detached(mask))
        except (RuntimeError, ValueError, TypeError):
            pass  # the checks below name the bad argument, or the op raises its error again
    _validation.tensor(x, "x")
    tau, v_th, v_reset, decay_input, surrogate, alpha = _validation.neuron(
        tau, v_th, v_reset, decay_input, surrogate, alpha)
    if v is not None:
        _validation.like(v, "v", x, "x")
        v = v.detach()
    if trace is not None:
        if trace_decay is None:
            raise ValueError("trace_decay must be given with trace")
        _validation.like(trace, "trace", x, "x")
        trace = trace.detach()
    with_trace = trace_decay is not None
    if with_trace:
        trace_decay = _validation.decay(trace_decay, "trace_decay")
        if trace is None:
            trace = torch.zeros_like(x)
    if mask is not None:
        mask = _validation.mask_for(mask, x).detach()

    name = _backend.get_backend(x.device)
    if name == "torch":
        return reference.lif_step_ref(x, v, tau=tau, v_th=v_th, v_reset=v_reset, decay_input=decay_input,
                                      surrogate=surrogate, alpha=alpha, trace=trace,
                                      trace_decay=trace_decay, mask=mask)
    args = (tau, v_th, v_reset, decay_input, trace_decay if with_trace else 0.0, surrogate, alpha)
    if name in _PLAIN_BACKENDS:
        spike, v_next, trace_next = _LIFStep.apply(_impl(name), x, v, trace, mask, args)
        return (spike, v_next, trace_next) if with_trace else (spike, v_next)
    if torch.compiler.is_compiling():
        # the op and its registered autograd (and fake kernel): what torch.compile traces
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        spike, v_next, _h, trace_next = torch.ops.ottt_cuda.lif_step_fwd(x, v, trace, mask, *args, needs_grad)
        # Custom-op autograd makes every output differentiable; OTTT detaches these.
        v_next, trace_next = v_next.detach(), trace_next.detach()
        return (spike, v_next, trace_next) if with_trace else (spike, v_next)
    return _lif_step_compiled(x, v, tau, v_th, v_reset, decay_input, surrogate, alpha, trace,
                              trace_decay if with_trace else None, mask)


def _lif_step_compiled(x, v, tau, v_th, v_reset, decay_input, surrogate, alpha, trace, trace_decay, mask):
    """lif_step on the compiled kernels, eagerly; v, trace and mask detached, trace
    present when trace_decay is given (None: no trace)."""
    with_trace = trace_decay is not None
    if with_trace and trace is None:
        trace = torch.zeros_like(x)
    args = (tau, v_th, v_reset, decay_input, trace_decay if with_trace else 0.0, surrogate, alpha)
    if torch.is_grad_enabled() and x.requires_grad:
        spike, v_next, trace_next = _LIFStep.apply(_Compiled, x, v, trace, mask, args)
    else:  # nothing to differentiate: no autograd Function, h not saved
        spike, v_next, _h, trace_next = _Compiled.lif_step_fwd(x, v, trace, mask, *args, False)
    return (spike, v_next, trace_next) if with_trace else (spike, v_next)


def _detached(t):
    return t.detach() if t is not None and t.requires_grad else t


def _finite_real(value):
    return _is_real(value) and math.isfinite(value)


def _lif_step_fast_ok(x, v, tau, v_th, v_reset, decay_input, surrogate, alpha, trace, trace_decay, mask):
    """Whether lif_step may skip its Python checks: the compiled kernels run it and
    every argument is of a kind the op checks itself (csrc/op_inputs.h: x's dtype,
    v/trace/mask like x, tau > 0, alpha > 0, the surrogate's name), or checked here
    cheaply (finite v_th and v_reset, trace_decay in [0, 1], trace only with
    trace_decay). A mask to broadcast takes the checked path, which expands it."""
    return (_compiled_serves(x) and _finite_real(tau) and _finite_real(v_th) and _finite_real(alpha)
            and (v_reset is None or _finite_real(v_reset)) and type(decay_input) is bool
            and type(surrogate) is str and (v is None or isinstance(v, torch.Tensor))
            and (trace_decay is None or (_finite_real(trace_decay) and 0.0 <= trace_decay <= 1.0))
            and (trace is None or (trace_decay is not None and isinstance(trace, torch.Tensor)))
            and (mask is None or (isinstance(mask, torch.Tensor) and mask.shape == x.shape
                                  and mask.dtype == x.dtype)))


def lif_multistep(x_seq, v0=None, *, tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid",
                  alpha=4.0, detach_reset=True):
    """All T steps of the LIF neuron over x_seq [T, ...] in one kernel: the BPTT
    baseline's neuron. Returns (spike_seq, v_last). Backward is full BPTT through
    the membrane (reverse-time recurrence); gradients reach x_seq and v0 (and flow
    in from v_last, to chain sequences). The reset is detached (the paper's BPTT)
    unless detach_reset is False; then the gradient also flows through the spike
    that drives the reset: dv/dh = 1 - v_th sg(z) (soft) or (1 - s) + (v_reset - h)
    sg(z) (hard), as SpikingJelly computes with detach_reset=False. Saved for
    backward: h_seq, one element per neuron and step."""
    _validation.tensor(x_seq, "x_seq")
    if x_seq.dim() < 1:
        raise ValueError("x_seq must have a leading time dimension [T, ...], got a 0-d tensor")
    tau, v_th, v_reset, decay_input, surrogate, alpha = _validation.neuron(
        tau, v_th, v_reset, decay_input, surrogate, alpha)
    if not isinstance(detach_reset, bool):
        raise TypeError(f"detach_reset must be a bool, got {type(detach_reset).__name__}")
    if v0 is not None:
        _validation.like(v0, "v0", x_seq, "x_seq", shape=x_seq.shape[1:])
    name = _backend.get_backend(x_seq.device)
    if name == "torch":
        return reference.lif_multistep_ref(x_seq, v0, tau=tau, v_th=v_th, v_reset=v_reset,
                                           decay_input=decay_input, surrogate=surrogate, alpha=alpha,
                                           detach_reset=detach_reset)
    args = (tau, v_th, v_reset, decay_input, surrogate, alpha)
    if name in _PLAIN_BACKENDS:
        return _LIFMultistep.apply(_impl(name), x_seq, v0, args, detach_reset)
    needs_grad = torch.is_grad_enabled() and (x_seq.requires_grad or (v0 is not None and v0.requires_grad))
    if needs_grad and not torch.compiler.is_compiling():
        return _LIFMultistep.apply(_Compiled, x_seq, v0, args, detach_reset)
    if torch.compiler.is_compiling():  # the op with its registered autograd, which the compiler traces
        spike_seq, v_last, _h = torch.ops.ottt_cuda.lif_multistep_fwd(x_seq, v0, *args, needs_grad,
                                                                      detach_reset=detach_reset)
        return spike_seq, v_last
    # nothing to differentiate (detach_reset changes only the backward)
    spike_seq, v_last, _h = _Compiled.lif_multistep_fwd(x_seq, v0, *args, False)
    return spike_seq, v_last


def trace_update(trace, s, decay):
    """The presynaptic trace a_hat = decay * a_hat + s, out of place (trace None = zeros)."""
    # Fast path (see the module's docstring) for inputs autograd does not track; the
    # others take the op with its registered autograd, below.
    if (_is_real(decay) and _compiled_serves(s) and (trace is None or isinstance(trace, torch.Tensor))
            and not (torch.is_grad_enabled() and (s.requires_grad or (trace is not None and trace.requires_grad)))):
        try:
            return _Compiled.trace_update(trace, s, decay)
        except (RuntimeError, ValueError, TypeError):
            pass  # the checks below name the bad argument, or the op raises its error again
    _validation.tensor(s, "s")
    if trace is not None:
        _validation.like(trace, "trace", s, "s")
    decay = _validation.decay(decay, "decay")
    name = _backend.get_backend(s.device)
    if name == "torch":
        return reference.trace_update_ref(trace, s, decay)
    if name == "cuda_emu":  # differentiated as the compiled op is (its registered autograd)
        return _impl(name).trace_update(trace, s, decay)
    if name == "triton":
        # The trace is a running filter of spikes, not differentiated by OTTT.
        with torch.no_grad():
            return _impl(name).trace_update(trace, s, decay)
    return torch.ops.ottt_cuda.trace_update(trace, s, decay)


def trace_update_(trace, s, decay):
    """In-place trace update; returns `trace`. Any strides are accepted."""
    # Fast path (see the module's docstring): the op checks trace, s (csrc/op_inputs.h)
    # and a finite decay in [0, 1] (csrc/common.h). Not for tensors that autograd
    # tracks: the checked path runs those under no_grad.
    if (_is_real(decay) and _compiled_serves(trace) and isinstance(s, torch.Tensor)
            and not (torch.is_grad_enabled() and (trace.requires_grad or s.requires_grad))):
        try:
            _Compiled.trace_update_(trace, s, decay)
            return trace
        except (RuntimeError, ValueError, TypeError):
            pass  # the checks below name the bad argument, or the op raises its error again
    _validation.tensor(trace, "trace")
    _validation.like(s, "s", trace, "trace")
    decay = _validation.decay(decay, "decay")
    name = _backend.get_backend(trace.device)
    with torch.no_grad():
        if name == "torch":
            reference.trace_update__ref(trace, s, decay)
        elif name in _PLAIN_BACKENDS:
            _impl(name).trace_update_(trace, s, decay)
            _bump_version(trace)
        else:
            _Dispatched.trace_update_(trace, s, decay)
    return trace


def outer_accumulate_(grad_w, g, a, alpha=1.0):
    """grad_w += alpha * g^T a, for g [..., out] and a [..., in] (leading dims
    flattened into the batch), accumulated in grad_w's dtype (float32 for
    float16/bfloat16 inputs). OTTT's instantaneous weight gradient: g is the
    error at the synapse's output, a the trace of its input. Returns grad_w."""
    # Fast path (see the module's docstring): the op checks every argument
    # (csrc/outer_accumulate_common.h). Not for tensors that autograd tracks: the
    # checked path runs those under no_grad, on detached g and a.
    if (_is_real(alpha) and _compiled_serves(grad_w) and isinstance(g, torch.Tensor) and isinstance(a, torch.Tensor)
            and not (torch.is_grad_enabled() and (grad_w.requires_grad or g.requires_grad or a.requires_grad))):
        try:
            _Compiled.outer_accumulate_(grad_w, g, a, alpha)
            return grad_w
        except (RuntimeError, ValueError, TypeError):
            pass  # the checks below name the bad argument, or the op raises its error again
    _validation.tensor(grad_w, "grad_w")
    _validation.tensor(g, "g")
    _validation.tensor(a, "a")
    if grad_w.dim() != 2:
        raise ValueError(f"grad_w must be 2-D [out, in], got shape {tuple(grad_w.shape)}")
    if g.dim() < 1 or g.shape[-1] != grad_w.shape[0]:
        raise ValueError(f"g must have shape [..., {grad_w.shape[0]}] (grad_w.shape[0]), got {tuple(g.shape)}")
    if a.dim() < 1 or a.shape[-1] != grad_w.shape[1]:
        raise ValueError(f"a must have shape [..., {grad_w.shape[1]}] (grad_w.shape[1]), got {tuple(a.shape)}")
    if g.shape[:-1] != a.shape[:-1]:
        raise ValueError(f"g and a must have the same leading (batch) dimensions, got {tuple(g.shape)} and "
                         f"{tuple(a.shape)}")
    if g.dtype != a.dtype:
        raise TypeError(f"g and a must have the same dtype, got {g.dtype} and {a.dtype}")
    if grad_w.dtype != g.dtype and not (grad_w.dtype == torch.float32 and g.dtype in (torch.float16, torch.bfloat16)):
        raise TypeError(f"grad_w must have g's dtype, or float32 for float16/bfloat16 g; got grad_w {grad_w.dtype} "
                        f"and g {g.dtype}")
    if g.device != grad_w.device or a.device != grad_w.device:
        raise ValueError(f"grad_w, g and a must be on one device, got {grad_w.device}, {g.device}, {a.device}")
    alpha = _validation.number(alpha, "alpha")
    name = _backend.get_backend(grad_w.device)
    with torch.no_grad():
        if name == "torch":
            reference.outer_accumulate__ref(grad_w, g, a, alpha)
        elif name in _PLAIN_BACKENDS:
            _impl(name).outer_accumulate_(grad_w, g.detach(), a.detach(), alpha)
            _bump_version(grad_w)
        else:
            _Dispatched.outer_accumulate_(grad_w, g.detach(), a.detach(), alpha)
    return grad_w
