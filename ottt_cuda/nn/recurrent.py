"""A recurrent LIF layer: I[t] = F x[t] + W s[t-1] + b, s[t] = LIF(I[t]).

Each synapse keeps the trace of its own input: F of x (Theorem 2 of the
supplementary uses x_hat for F's gradient; input_trace=False uses x itself),
W of the layer's previous spikes s[t-1]. Under OTTT/SLTT s[t-1] enters step t
detached (no gradient through time); under BPTT it stays in the graph.

dropout=p drops the layer's output spikes with one mask per sequence, both where
they go out and where they are fed back: a dropped neuron is silent to every
synapse for the whole sequence (variational dropout on the recurrence). A
Dropout after the layer instead leaves the recurrence undropped.
"""
import torch

from .. import _validation
from ._state import Stateful, set_state
from .lif import LIF
from .misc import Dropout
from .synapse import Linear
from .ws import WSLinear


class RecurrentLIF(Stateful):
    def __init__(self, in_features, out_features, bias=True, *, ws=False, input_trace=True, trace_decay=None,
                 tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0, dropout=0.0,
                 step_mode="s"):
        super().__init__(step_mode)
        _validation.boolean(ws, "ws")
        _validation.boolean(input_trace, "input_trace")
        if trace_decay is not None:
            _validation.decay(trace_decay, "trace_decay")
        self.neuron = LIF(tau, v_th, v_reset, decay_input, surrogate, alpha)
        decay = self.neuron.decay if trace_decay is None else trace_decay
        make = WSLinear if ws else Linear
        self.input = make(in_features, out_features, bias, trace=input_trace, trace_decay=decay)
        self.recurrent = Linear(out_features, out_features, bias=False, trace=True, trace_decay=decay)
        # Checks p (a number in [0, 1)) and keeps one mask per sequence; identity at p = 0 and in eval mode.
        self.dropout = Dropout(dropout)
        self.s_prev = None

    def reset_state(self):
        set_state(self, "s_prev", None)

    def _cell(self, current):
        # At t = 1 there are no previous spikes: W s[0] = 0 and W's trace
        # starts at s[1] on step 2, as a zero-initialized trace would.
        if self.s_prev is not None:
            current = current + self.recurrent.step(self.s_prev)
        s = self.dropout.step(self.neuron.step(current))
        set_state(self, "s_prev", s if self.mode == "bptt" else s.detach())
        return s

    def step(self, x):
        return self._cell(self.input.step(x))

    def multi(self, x_seq):
        # The input synapse over all steps at once (one GEMM); the recurrence is
        # inherently sequential.
        currents = self.input.multi(x_seq)
        outs = [self._cell(c) for c in currents.unbind(0)]  # (unbind: see LIF.multi)
        return torch.stack(outs) if outs else currents
