"""The neuron writes the next synapse's trace (docs/design.md, "Who owns what").

A synapse fed straight by an LIF neuron would update its trace a = decay * a + x in
a pass of its own, reading again the spikes the LIF kernel has just written. When
the LIF knows that synapse (a *link*, made by fuse_traces), its kernel updates the
trace in the same pass (lif_step's `trace`/`trace_decay`) and hands it over with
the spikes; the synapse adopts it instead of running trace_update.

Between the two only modules that keep the trace exact may sit: nn.Flatten and
nn.Identity (the same numbers, reshaped) and Scale(c) (x = c * s, so the trace of
x is c times the trace of s: the synapse keeps the trace of s and multiplies its
weight gradient by c). Average pooling is linear too, but carrying the trace at
the un-pooled resolution would cost more passes than it saves, so a pool ends
the chain, as does anything else. In step_mode "m" (chunked OTTT_A) the LIF hands over
the traces of all its steps at once, stacked as the synapse would stack its own.

The hand-over checks itself at run time, so it can never give a wrong answer:
the LIF tags its spike tensor with the new trace; Scale passes the tag on to
its output; the synapse adopts the trace only if its input is that tagged tensor
(or a full contiguous view of it, as nn.Flatten returns), unchanged since
(version counter), and its own trace is still the one the LIF read. A hook that
replaces a tensor, an in-place change, a module not listed above, a call order
other than the Sequential's: the synapse gets an untagged or stale input and
updates its trace itself, as without the link.
"""
import weakref

import torch
import torch.nn as nn

_TAG = "_ottt_trace_handoff"


class TraceLink:
    """An LIF's consumer synapse and the product of the Scale factors on the way."""
    __slots__ = ("consumer", "scale")

    def __init__(self, consumer, scale):
        self.consumer, self.scale = consumer, scale


class Handoff:
    """A trace computed by the LIF for `consumer`: trace = decay * prev + s, where prev is
    the consumer's trace the LIF read (held weakly: a tag must not keep old traces
    alive) at version prev_version; the consumer's input is scale * s."""
    __slots__ = ("consumer", "trace", "prev", "prev_version", "scale", "version")

    def __init__(self, consumer, trace, prev, prev_version, scale, version):
        self.consumer, self.trace, self.prev, self.prev_version = consumer, trace, prev, prev_version
        self.scale, self.version = scale, version

    def prev_is(self, a):
        return a is None if self.prev is None else self.prev() is a


def fuse_traces(model, enabled=True):
    """Let each LIF of `model` update the trace of the synapse it feeds, in its own kernel
    pass (enabled=False: every synapse updates its own trace). Looks inside every
    nn.Sequential for LIF -> [Flatten | Identity | Scale]* -> Linear/Conv2d (trace=True).
    Gradients are those of separate updates (float rounding aside, through Scale).
    The models of ottt_cuda.models are built fused; train_step fuses a model it has not
    seen fused or unfused. Returns the number of links made."""
    from .lif import LIF

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    for m in model.modules():
        if isinstance(m, LIF):
            object.__setattr__(m, "_trace_link", None)
    links = 0
    if enabled:
        for seq in model.modules():
            if isinstance(seq, nn.Sequential):
                mods = list(seq)
                for i, m in enumerate(mods):
                    if isinstance(m, LIF):
                        link = _follow(mods, i + 1)
                        object.__setattr__(m, "_trace_link", link)
                        links += link is not None
    object.__setattr__(model, "_ottt_traces_fused", enabled)
    return links


def _follow(mods, i):
    from .misc import Scale
    from .synapse import _Synapse

    scale = 1.0
    for m in mods[i:]:
        if isinstance(m, Scale):
            scale *= m.c
        elif isinstance(m, _Synapse):
            return TraceLink(m, scale) if m.trace else None
        elif type(m) not in (nn.Flatten, nn.Identity):
            return None
    return None


def ensure_fused(model):
    """fuse_traces(model) unless it was fused or unfused before (train_step's call)."""
    if getattr(model, "_ottt_traces_fused", None) is None:
        fuse_traces(model)


def offer(link, x, step_mode):
    """(trace_in, decay) for the LIF step on x (in `step_mode`: "m" = the first of a sequence
    of steps) to update link.consumer's trace, or None when the consumer does not take one
    now (another mode or step mode, its trace in other units)."""
    syn = link.consumer
    if syn.mode != "ottt" or not syn.trace or syn.step_mode != step_mode or torch.compiler.is_compiling():
        return None
    a = syn.a_hat
    if a is None:
        return torch.zeros_like(x), syn._checked_decay()
    if (syn._a_scale != link.scale or a.numel() != x.numel() or a.dtype != x.dtype or a.device != x.device
            or not a.is_contiguous()):
        return None
    return a.view(x.shape), syn._checked_decay()


def tag(spike, link, trace_next):
    """Mark the LIF's spikes as carrying link.consumer's next trace (of the spikes)."""
    prev = link.consumer.a_hat
    ref, version = (None, None) if prev is None else (weakref.ref(prev), prev._version)
    setattr(spike, _TAG, Handoff(link.consumer, trace_next, ref, version, 1.0, spike._version))


def _root(x):
    """The tensor whose tag x would carry: x itself, or the base x is a full contiguous view of
    (as nn.Flatten returns); None for any other view."""
    root = x._base
    if root is None:
        return x
    if x.numel() != root.numel() or x.data_ptr() != root.data_ptr() or not x.is_contiguous():
        return None
    return root


def _take(root):
    """Remove root's tag (it is passed on or used once: a spike tensor kept by the caller must not
    keep traces alive); the hand-over it carried if root was not written to since it was tagged."""
    rec = root.__dict__.pop(_TAG, None)
    return rec if rec is not None and rec.version == root._version else None


def scaled(x, out, c):
    """Scale's output out = c * x carries x's hand-over, its scale multiplied by c."""
    if torch.compiler.is_compiling():  # no tags on traced tensors (nor data_ptr)
        return
    root = _root(x)
    rec = _take(root) if root is not None else None
    if rec is not None:
        setattr(out, _TAG, Handoff(rec.consumer, rec.trace, rec.prev, rec.prev_version, rec.scale * c, out._version))


def claim(syn, x):
    """The trace (of s, shaped like x) syn adopts for input x = scale * s, and the scale;
    None when x carries no valid hand-over for syn. In step_mode "m", x holds all steps
    [T, B, ...] and so does the trace."""
    root = _root(x)
    if root is None or getattr(getattr(root, _TAG, None), "consumer", None) is not syn:
        return None
    rec = _take(root)
    if rec is None:
        return None
    prev = syn.a_hat
    if not rec.prev_is(prev) or (prev is not None and (prev._version != rec.prev_version or syn._a_scale != rec.scale)):
        return None
    return rec.trace.view(x.shape), rec.scale
