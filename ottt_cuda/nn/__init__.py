"""OTTT layers: neurons own the membrane, synapses own the trace of their input.

Any plain torch module (pooling, flatten, residual additions) may sit between
them. See ottt_cuda.nn.synapse for what a trace means after max-pooling.
"""
from ._handoff import fuse_traces
from ._state import MODES, Stateful, modes, multistep, online_steps, reset, set_mode, set_step_mode
from .lif import LIF
from .misc import Dropout, Scale
from .recurrent import RecurrentLIF
from .synapse import Conv2d, Linear
from .ws import WSConv2d, WSLinear, hoisted, standardize

__all__ = ["fuse_traces", "MODES", "Stateful", "modes", "multistep", "online_steps", "reset", "set_mode",
           "set_step_mode", "LIF", "Dropout", "Scale", "RecurrentLIF", "Conv2d", "Linear", "WSConv2d", "WSLinear",
           "hoisted", "standardize"]
