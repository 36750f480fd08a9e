"""The LIF neuron layer: owns the membrane, runs the fused kernels."""
import warnings

import torch

from .. import _validation, ops
from . import _fast, _handoff
from ._state import Stateful, set_state


class LIF(Stateful):
    """Leaky integrate-and-fire neuron (docs/design.md, "The neuron"), soft reset when
    v_reset is None, hard reset to v_reset otherwise.

    Keeps the membrane `v` between calls (cleared by ottt_cuda.reset). A
    sequence starts from v = 0 (soft reset) or v = v_reset (hard reset), as
    SpikingJelly's neurons do. Input is the current I[t]: [B, ...] in step_mode
    "s", [T, B, ...] in step_mode "m".
    In mode "ottt"/"sltt" the membrane history is detached (the fused step
    kernel; the error at step t is purely spatial); in mode "bptt" it stays in
    the graph: multi-step input runs the all-steps kernel, and a single step
    runs it with T = 1 from the previous membrane, whose v_last is
    differentiable, so a Python loop of steps is still full BPTT.

    detach_reset (default True) applies to mode "bptt" only. True detaches the
    reset, as the paper's BPTT does; False back-propagates through it too
    (SpikingJelly's LIFNode default, which convert() carries over). OTTT and SLTT
    always detach the reset: both methods are defined with the reset (and the
    membrane history) detached, so an LIF with detach_reset=False warns once when
    it runs in those modes and computes the method's gradients.
    """

    def __init__(self, tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0,
                 step_mode="s", *, detach_reset=True):
        super().__init__(step_mode)
        (self.tau, self.v_th, self.v_reset, self.decay_input, self.surrogate,
         self.alpha) = _validation.neuron(tau, v_th, v_reset, decay_input, surrogate, alpha)
        if not isinstance(detach_reset, bool):
            raise TypeError(f"LIF: detach_reset must be a bool, got {type(detach_reset).__name__}")
        self.detach_reset = detach_reset
        self._warned_detach_reset = False
        self.v = None
        self._args = None  # the kernel's scalar arguments, checked once per sequence (_step_args)
        # The synapse this neuron feeds, whose trace its kernel updates (nn.fuse_traces); a plain
        # attribute, not a submodule.
        object.__setattr__(self, "_trace_link", None)

    @property
    def decay(self):
        """lambda = 1 - 1/tau: the leak, and the trace decay of synapses fed by this neuron."""
        return 1.0 - 1.0 / self.tau

    def _kw(self):
        return dict(tau=self.tau, v_th=self.v_th, v_reset=self.v_reset, decay_input=self.decay_input,
                    surrogate=self.surrogate, alpha=self.alpha)

    def reset_state(self):
        set_state(self, "v", None)
        set_state(self, "_args", None)

    def _v_for(self, x):
        # A state left from another batch shape or dtype (e.g. after switching
        # AMP on) is an error of the caller: say so rather than broadcast.
        if self.v is not None and (self.v.shape != x.shape or self.v.dtype != x.dtype or self.v.device != x.device):
            raise ValueError(f"LIF membrane has shape {tuple(self.v.shape)} / {self.v.dtype} / {self.v.device} but "
                             f"the input is {tuple(x.shape)} / {x.dtype} / {x.device}; call ottt_cuda.reset(model) "
                             "between sequences")
        if self.v is None and self.v_reset:
            # A fresh hard-reset membrane rests at v_reset (the ops read None as 0,
            # which is the rest value of a soft reset and of v_reset = 0).
            return torch.full_like(x, self.v_reset)
        return self.v

    def _kw_bptt(self):
        return dict(self._kw(), detach_reset=self.detach_reset)

    def _kw_online(self):
        if not self.detach_reset and not self._warned_detach_reset:
            self._warned_detach_reset = True
            warnings.warn(f"LIF(detach_reset=False) in mode {self.mode!r}: OTTT and SLTT detach the reset by "
                          "definition, so it is detached; detach_reset=False applies to mode 'bptt' only",
                          UserWarning, stacklevel=2)
        return self._kw()

    def _step_args(self):
        """The compiled step kernel's scalar arguments, checked at the first step of a
        sequence and reused until the next reset (changing tau, v_th, ... in the middle
        of a sequence takes effect at the next one)."""
        if self._args is None:
            kw = self._kw_online()
            tau, v_th, v_reset, decay_input, surrogate, alpha = _validation.neuron(**kw)
            self._args = (tau, v_th, v_reset, decay_input, 0.0, surrogate, alpha)
        return self._args

    def step(self, x):
        _validation.tensor(x, "x")
        v = self._v_for(x)
        if self.mode == "bptt":
            spikes, self.v = ops.lif_multistep(x.unsqueeze(0), v, **self._kw_bptt())
            return spikes[0]
        link = self._trace_link
        handoff = None
        if link is not None and self.step_mode == "s" and self.mode == "ottt":
            handoff = _handoff.offer(link, x, "s")
        if handoff is not None:
            spike, trace_next = self._fire_traced(x, v, *handoff)
            _handoff.tag(spike, link, trace_next)
            return spike
        if _fast.compiled(x):
            spike, v = _fast.lif_step(x, v, self._step_args())
        else:
            spike, v = ops.lif_step(x, v, **self._kw_online())
        set_state(self, "v", v)
        return spike

    def _fire_traced(self, x, v, trace, decay):
        """One OTTT step that also updates the linked synapse's trace (nn._handoff): (spike, trace_next)."""
        if _fast.compiled(x):
            spike, v, trace_next = _fast.lif_step_traced(x, v, trace, decay, self._step_args())
        else:
            spike, v, trace_next = ops.lif_step(x, v, **self._kw_online(), trace=trace, trace_decay=decay)
        set_state(self, "v", v)
        return spike, trace_next

    def multi(self, x_seq):
        if self.mode == "bptt":
            v = self._v_for(x_seq[0] if x_seq.shape[0] else x_seq.new_empty(x_seq.shape[1:]))
            spikes, self.v = ops.lif_multistep(x_seq, v, **self._kw_bptt())
            return spikes
        # OTTT/SLTT: the steps are independent in backward, so a loop of the
        # fused step kernel is the whole computation (no reverse recurrence).
        link = self._trace_link
        handoff = None
        if link is not None and self.mode == "ottt" and x_seq.shape[0]:
            handoff = _handoff.offer(link, x_seq[0], "m")
        if handoff is not None:  # the linked synapse's traces of all T steps, stacked as it would
            _validation.tensor(x_seq, "x")
            trace, decay = handoff
            spikes, traces = [], []
            for x in x_seq.unbind(0):
                spike, trace = self._fire_traced(x, self._v_for(x), trace, decay)
                spikes.append(spike)
                traces.append(trace)
            out = torch.stack(spikes)
            _handoff.tag(out, link, torch.stack(traces))
            return out
        # unbind, not x_seq[t]: the backward of each x_seq[t] would zero-fill a whole [T, B, ...] gradient
        # and add it up, T times (a tenth of a chunked VGG-11 step); unbind's stacks the T pieces once.
        return torch.stack([self.step(x) for x in x_seq.unbind(0)]) if x_seq.shape[0] else x_seq

    def extra_repr(self):
        return (f"tau={self.tau}, v_th={self.v_th}, v_reset={self.v_reset}, decay_input={self.decay_input}, "
                f"surrogate={self.surrogate!r}, alpha={self.alpha}, detach_reset={self.detach_reset}, "
                f"mode={self.mode!r}, step_mode={self.step_mode!r}")
