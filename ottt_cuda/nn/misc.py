"""Small parameter-free layers: Scale and the per-sequence Dropout."""
import torch
import torch.nn as nn

from .. import _validation
from . import _handoff
from ._state import Stateful


class Scale(nn.Module):
    """x * c (the sWS gamma, 2.74 after spiking neurons)."""

    def __init__(self, c):
        super().__init__()
        self.c = _validation.number(c, "c")

    def forward(self, x):
        out = x * self.c
        _handoff.scaled(x, out, self.c)  # a trace handed from an LIF to the next synapse goes on (see _handoff)
        return out

    def extra_repr(self):
        return f"c={self.c}"


class Dropout(Stateful):
    """Dropout with ONE mask per sample sequence: drawn at the first step after
    a reset, reused at every time step, redrawn at the next reset (as the
    paper's code). Identity in eval mode or with p = 0."""

    def __init__(self, p=0.5, step_mode="s"):
        super().__init__(step_mode)
        self.p = _validation.number(p, "p", low=0.0)
        if self.p >= 1.0:
            raise ValueError(f"p must be < 1, got {self.p}")
        self.mask = None

    def reset_state(self):
        self.mask = None

    def _mask_for(self, x):
        if self.mask is None or self.mask.shape != x.shape:
            if self.mask is not None:
                raise ValueError(f"Dropout mask has shape {tuple(self.mask.shape)} but the input step is "
                                 f"{tuple(x.shape)}; call ottt_cuda.reset(model) between sequences")
            self.mask = self.draw_mask(x.shape, x.device)
        return self.mask.to(x.dtype)

    def draw_mask(self, shape, device):
        """A new mask (float32, kept entries 1 / (1 - p)) from torch's global generator: what the
        first step of a sequence draws (the CUDA-graph step draws its own the same way)."""
        keep = 1.0 - self.p
        return torch.bernoulli(torch.full(shape, keep, dtype=torch.float32, device=device)) / keep

    def step(self, x):
        if not self.training or self.p == 0.0:
            return x
        return x * self._mask_for(x)

    def multi(self, x_seq):
        if not self.training or self.p == 0.0 or x_seq.shape[0] == 0:
            return x_seq
        return x_seq * self._mask_for(x_seq[0])

    def extra_repr(self):
        return f"p={self.p}"
