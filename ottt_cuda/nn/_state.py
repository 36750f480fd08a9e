"""State and execution-mode plumbing shared by every stateful layer.

Each stateful module (neuron, synapse, dropout, recurrent cell) carries:
- `mode`: "ottt" (membrane history detached, weight gradient with the trace),
  "sltt" (as ottt, weight gradient with the current input), or "bptt"
  (membrane history kept in the graph, plain weight gradient);
- `step_mode`: "s" (one time step, x is [B, ...]) or "m" (x holds all steps);
- `seq_len`: None, or T when a whole model runs multi-step on tensors whose
  batch axis is time-major flattened, [T*B, ...]. The flattened form is what
  lets ordinary torch modules (pooling, flatten, residual adds) sit between
  our layers without wrappers in multi-step execution. With seq_len None a
  standalone module in step_mode "m" takes [T, B, ...].
"""
import contextlib

import torch.nn as nn

MODES = ("ottt", "sltt", "bptt")
STEP_MODES = ("s", "m")


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def check_step_mode(step_mode):
    if step_mode not in STEP_MODES:
        raise ValueError(f"step_mode must be one of {STEP_MODES}, got {step_mode!r}")
    return step_mode


class Stateful(nn.Module):
    """Base of every ottt_cuda layer that keeps state across time steps."""

    # True only inside online_steps(): the caller promises one backward per time step,
    # run before the next step, with a plain .backward() (no `inputs`, no autograd.grad).
    # Layers may then update state in place and accumulate weight gradients into .grad.
    _online = False

    def __init__(self, step_mode="s"):
        super().__init__()
        self.mode = "ottt"
        self.step_mode = check_step_mode(step_mode)
        self.seq_len = None

    def reset_state(self):  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def step(self, x):
        """One time step, x [B, ...]."""
        raise NotImplementedError

    def multi(self, x_seq):
        """All steps at once, x_seq [T, B, ...]; by default a loop of step()."""
        # unbind, not x_seq[t]: each indexing's backward would write a zero-filled [T, B, ...] gradient
        return _stack([self.step(x) for x in x_seq.unbind(0)], x_seq)

    def forward(self, x):
        if self.step_mode == "s":
            return self.step(x)
        if self.seq_len is None:
            if x.dim() < 2:
                raise ValueError(f"x must be [T, B, ...] in step_mode 'm', got shape {tuple(x.shape)}")
            return self.multi(x)
        if x.shape[0] % self.seq_len:
            raise ValueError(f"x's first dimension ({x.shape[0]}) must be T*B with T = seq_len = {self.seq_len}")
        out = self.multi(x.unflatten(0, (self.seq_len, -1)))
        return out.flatten(0, 1)


def set_state(module, name, value):
    """module.name = value for a per-step state tensor (membrane, trace, previous spikes).
    States are plain attributes, never parameters, buffers or submodules, so nn.Module's
    registration checks in __setattr__ (~3 us, per layer and time step) are skipped."""
    object.__setattr__(module, name, value)


def _stack(outs, like):
    import torch

    if not outs:
        return like.new_empty(like.shape)
    return torch.stack(outs)


def _check_model(model):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def reset(model):
    """Clear every state in `model`: membranes, traces, dropout masks, feedback."""
    _check_model(model)
    for m in model.modules():
        fn = getattr(m, "reset_state", None)
        if callable(fn):
            fn()
    return model


def set_mode(model, mode):
    """Set how every ottt_cuda layer in `model` keeps state and computes weight
    gradients: "ottt", "sltt" or "bptt". Returns the model."""
    _check_model(model)
    check_mode(mode)
    for m in model.modules():
        if isinstance(m, Stateful) and m.mode != mode:  # (nn.Module.__setattr__ costs ~3 us per layer)
            m.mode = mode
    return model


def set_step_mode(model, step_mode, seq_len=None):
    """Run every ottt_cuda layer in `model` one step per call ("s") or on all steps at once
    ("m"); seq_len T means inputs come time-major flattened, [T*B, ...]. Returns the model."""
    _check_model(model)
    check_step_mode(step_mode)
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise ValueError(f"seq_len must be None or a positive int, got {seq_len!r}")
    for m in model.modules():
        if isinstance(m, Stateful):
            m.step_mode = step_mode
            m.seq_len = seq_len
    return model


@contextlib.contextmanager
def multistep(model, T):
    """Run `model` on time-major flattened inputs [T*B, ...] for the duration."""
    _check_model(model)
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    saved = [(m, m.step_mode, m.seq_len) for m in model.modules() if isinstance(m, Stateful)]
    set_step_mode(model, "m", T)
    try:
        yield model
    finally:
        for m, sm, sl in saved:
            m.step_mode, m.seq_len = sm, sl


@contextlib.contextmanager
def modes(model, mode):
    """Temporarily set every layer's mode."""
    _check_model(model)
    check_mode(mode)
    saved = [(m, m.mode) for m in model.modules() if isinstance(m, Stateful)]
    set_mode(model, mode)
    try:
        yield model
    finally:
        for m, md in saved:
            m.mode = md


@contextlib.contextmanager
def online_steps(model, defer_weight_grads=False):
    """For the duration, every time step's graph is back-propagated (plain .backward(), no
    `inputs`) before the next step runs, and each layer runs once per step. Lets the layers
    skip per-step work that only matters when graphs of several steps are alive at once:
    traces updated in place, the weight gradient accumulated straight into .grad.
    defer_weight_grads=True (nothing reads .grad before the end): a Linear synapse keeps
    each step's gradient factors and sums them into .grad with one GEMM (see _deferred),
    on exit at the latest. train_step uses it for its step-by-step loops; a user's own
    loop need not (everything then stays out of place and per step)."""
    from ._deferred import DeferredWeightGrad
    from .synapse import Linear

    _check_model(model)
    mods = [m for m in model.modules() if isinstance(m, Stateful)]
    deferred = [m for m in mods if isinstance(m, Linear)] if defer_weight_grads else []
    for m in mods:
        m._online = True
    for m in deferred:
        m._deferred = DeferredWeightGrad()
    ok = False
    try:
        yield model
        ok = True
    finally:
        for m in mods:
            m._online = False
        for m in deferred:
            pending, m._deferred = m._deferred, None
            if ok:
                pending.flush()
            else:
                pending.drop()


def deferred_weight_grads(model):
    """Inside online_steps(model, defer_weight_grads=True): the DeferredWeightGrad of every synapse
    that has one (the ones online_steps set up, found where it put them), for a loop that flushes them
    itself before the context exits (train_step's OTTT_O steps the optimizer every time step)."""
    return [m._deferred for m in model.modules() if getattr(m, "_deferred", None) is not None]
