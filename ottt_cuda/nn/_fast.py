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
  goes through ottt_cuda.ops, which validates and dispatches.
"""
import torch

from .. import ops

# The compiled path's pieces are ottt_cuda.ops' own: its backend test (_compiled_serves),
# the OpOverloads looked up once and called past their Python autograd where autograd
# has nothing to do (_Compiled), and the LIF step's plain autograd.Function (_LIFStep).


def compiled(t):
    """Whether tensor t's step can call the compiled kernels directly (and is not being traced).
    set_backend and OTTT_BACKEND are seen at the next call; see ops._compiled_serves."""
    return ops._compiled_serves(t)


def outer_accumulate_(grad_w, g, a, fast, alpha=1.0):
    """grad_w += alpha g^T a (g [..., out], a [..., in], grad_w [out, in] of g's dtype or float32)."""
    if fast:
        ops._Compiled.outer_accumulate_(grad_w, g, a, alpha)
        return grad_w
    return ops.outer_accumulate_(grad_w, g, a, alpha)


def trace_update(trace, s, decay, fast):
    """decay * trace + s, out of place (trace None = zeros); never part of a graph."""
    if fast:
        return ops._Compiled.trace_update(trace, s, decay)
    return ops.trace_update(trace, s, decay)


def trace_update_(trace, s, decay, fast):
    """trace = decay * trace + s in place."""
    if fast:
        ops._Compiled.trace_update_(trace, s, decay)
        return trace
    return ops.trace_update_(trace, s, decay)


def lif_step(x, v, args):
    """(spike, v_next) of one LIF step with the compiled kernels; v None = a zero membrane; the
    gradient reaches x only (OTTT/SLTT). args = (tau, v_th, v_reset, decay_input, trace_decay
    (unused: 0.0), surrogate, alpha)."""
    if torch.is_grad_enabled() and x.requires_grad:
        spike, v_next, _ = ops._LIFStep.apply(ops._Compiled, x, v, None, None, args)
        return spike, v_next
    spike, v_next, _h, _ = ops._Compiled.lif_step_fwd(x, v, None, None, *args, False)
    return spike, v_next


def lif_step_traced(x, v, trace, decay, args):
    """(spike, v_next, trace_next) of lif_step that also updates the trace of its spikes,
    trace_next = decay * trace + spike (trace a tensor like x; nn._handoff)."""
    args = args[:4] + (decay,) + args[5:]
    if torch.is_grad_enabled() and x.requires_grad:
        return ops._LIFStep.apply(ops._Compiled, x, v, trace, None, args)
    spike, v_next, _h, trace_next = ops._Compiled.lif_step_fwd(x, v, trace, None, *args, False)
    return spike, v_next, trace_next
