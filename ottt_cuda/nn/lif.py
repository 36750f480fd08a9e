"""The LIF neuron layer: owns the membrane, runs the fused kernels."""
import torch

from .. import _validation, ops
from ._state import Stateful


class LIF(Stateful):
    """Leaky integrate-and-fire neuron (DESIGN.md section 1), soft reset when
    v_reset is None, hard reset to v_reset otherwise.

    Keeps the membrane `v` between calls (cleared by ottt_cuda.reset). Input is
    the current I[t]: [B, ...] in step_mode "s", [T, B, ...] in step_mode "m".
    In mode "ottt"/"sltt" the membrane history is detached (the fused step
    kernel; the error at step t is purely spatial); in mode "bptt" it stays in
    the graph: multi-step input runs the all-steps kernel, and a single step
    runs it with T = 1 from the previous membrane, whose v_last is
    differentiable, so a Python loop of steps is still full BPTT.
    """

    def __init__(self, tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0,
                 step_mode="s"):
        super().__init__(step_mode)
        (self.tau, self.v_th, self.v_reset, self.decay_input, self.surrogate,
         self.alpha) = _validation.neuron(tau, v_th, v_reset, decay_input, surrogate, alpha)
        self.v = None

    @property
    def decay(self):
        """lambda = 1 - 1/tau: the leak, and the trace decay of synapses fed by this neuron."""
        return 1.0 - 1.0 / self.tau

    def _kw(self):
        return dict(tau=self.tau, v_th=self.v_th, v_reset=self.v_reset, decay_input=self.decay_input,
                    surrogate=self.surrogate, alpha=self.alpha)

    def reset_state(self):
        self.v = None

    def _v_for(self, x):
        # A state left from another batch shape or dtype (e.g. after switching
        # AMP on) is an error of the caller: say so rather than broadcast.
        if self.v is not None and (self.v.shape != x.shape or self.v.dtype != x.dtype):
            raise ValueError(f"LIF membrane has shape {tuple(self.v.shape)} / {self.v.dtype} but the input is "
                             f"{tuple(x.shape)} / {x.dtype}; call ottt_cuda.reset(model) between sequences")
        return self.v

    def step(self, x):
        v = self._v_for(x)
        if self.mode == "bptt":
            spikes, self.v = ops.lif_multistep(x.unsqueeze(0), v, **self._kw())
            return spikes[0]
        spike, self.v = ops.lif_step(x, v, **self._kw())
        return spike

    def multi(self, x_seq):
        if self.mode == "bptt":
            v = self._v_for(x_seq[0]) if x_seq.shape[0] else self.v
            spikes, self.v = ops.lif_multistep(x_seq, v, **self._kw())
            return spikes
        # OTTT/SLTT: the steps are independent in backward, so a loop of the
        # fused step kernel is the whole computation (no reverse recurrence).
        return torch.stack([self.step(x_seq[t]) for t in range(x_seq.shape[0])]) if x_seq.shape[0] else x_seq

    def extra_repr(self):
        return (f"tau={self.tau}, v_th={self.v_th}, v_reset={self.v_reset}, decay_input={self.decay_input}, "
                f"surrogate={self.surrogate!r}, alpha={self.alpha}, mode={self.mode!r}, step_mode={self.step_mode!r}")
