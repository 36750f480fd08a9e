"""Per-time-step kernel calls of the layers, without the public ops' per-call overhead.

At batch 1 a time step is a handful of tiny kernels, and what surrounds them costs
more than they do: ottt_cuda.ops re-validates every scalar and tensor on every call,
and a compiled op differentiated through torch.library's Python autograd wrapper
costs ~100 us per forward + backward on the CPU, against ~10 us of kernel. The layers
call these helpers instead:

- arguments are checked by the layer once per sequence (the shapes and dtypes of
  what reaches here are the layer's own: its state, its weights, its input checked
  at the door), not at every step;
- with the compiled backend ('cpu' / 'cuda') the kernels run through torch.ops
  directly, and the LIF step is differentiated by a plain autograd.Function that
  calls the same backward kernel the registered autograd formula calls;
- any other backend ('torch', 'triton'), and code being traced by torch.compile,
  goes through ottt_cuda.ops as before.
"""
import os

import torch

from .. import _backend, ops

_COMPILED = ("cpu", "cuda")
# Calling the op below the Autograd dispatch key skips the Python autograd wrapper that
# torch.library installs (~13 us per call); inside LIFStep.forward no graph is wanted.
_below_autograd = getattr(torch._C, "_AutoDispatchBelowAutograd", None)


_choice = {}  # (device type, forced backend, OTTT_BACKEND) -> whether the backend is a compiled one


def compiled(device):
    """Whether this step can call the compiled kernels directly (and is not being traced).
    The backend choice is remembered per (device type, set_backend, OTTT_BACKEND): a
    change of either is seen at the next call; an error (a forced backend that cannot run
    here) is raised by get_backend at every call, never remembered."""
    key = (device.type, _backend._forced, os.environ.get("OTTT_BACKEND"))
    fast = _choice.get(key)
    if fast is None:
        fast = _choice[key] = _backend.get_backend(device) in _COMPILED
    return fast and not torch.compiler.is_compiling()


def outer_accumulate_(grad_w, g, a, fast):
    """grad_w += g^T a (g [..., out], a [..., in], grad_w [out, in] of g's dtype or float32)."""
    if fast:
        torch.ops.ottt_cuda.outer_accumulate_(grad_w, g, a, 1.0)
        return grad_w
    return ops.outer_accumulate_(grad_w, g, a)


def trace_update(trace, s, decay, fast):
    """decay * trace + s, out of place (trace None = zeros); never part of a graph."""
    if fast:
        return torch.ops.ottt_cuda.trace_update(trace, s, decay)
    return ops.trace_update(trace, s, decay)


def trace_update_(trace, s, decay, fast):
    """trace = decay * trace + s in place."""
    if fast:
        torch.ops.ottt_cuda.trace_update_(trace, s, decay)
        return trace
    return ops.trace_update_(trace, s, decay)


def _lif_fwd(x, v, args, save_h):
    op = torch.ops.ottt_cuda.lif_step_fwd.default
    if _below_autograd is None:
        return op(x, v, None, None, *args, save_h)
    with _below_autograd():
        return op(x, v, None, None, *args, save_h)


class LIFStep(torch.autograd.Function):
    """One LIF step through the compiled kernels; the gradient reaches x only (OTTT/SLTT).
    args = (tau, v_th, v_reset, decay_input, trace_decay (unused: 0.0), surrogate, alpha)."""

    @staticmethod
    def forward(ctx, x, v, args):
        spike, v_next, h, _ = _lif_fwd(x, v, args, True)
        ctx.save_for_backward(h)
        ctx.args = args
        ctx.mark_non_differentiable(v_next)
        ctx.set_materialize_grads(False)
        return spike, v_next

    @staticmethod
    def backward(ctx, grad_spike, _grad_v):
        if grad_spike is None:
            return None, None, None
        (h,) = ctx.saved_tensors
        tau, v_th, _v_reset, decay_input, _td, surrogate, alpha = ctx.args
        grad_x = torch.ops.ottt_cuda.lif_step_bwd(grad_spike, h, None, tau, v_th, decay_input, surrogate, alpha)
        return grad_x, None, None


def lif_step(x, v, args):
    """(spike, v_next) of one LIF step with the compiled kernels; v None = a zero membrane."""
    if torch.is_grad_enabled() and x.requires_grad:
        return LIFStep.apply(x, v, args)
    spike, v_next, _h, _ = _lif_fwd(x, v, args, False)
    return spike, v_next
