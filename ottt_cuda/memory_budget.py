"""A memory budget instead of a chunk size: train_step(..., chunk="auto", memory_budget=BYTES).

Under OTTT_A with chunk=K, a step keeps the model's state (membranes, traces, hoisted standardized
weights, the input) plus what autograd saves for the backward of one chunk, which grows with K;
after the last chunk the hoisted WS weights' backward saves its own tensors once. So
    peak(K) <= max(fixed + K * per_step, outside).
The three terms are measured once per (model, input shape, T), on the first step, by counting the
tensors packed for backward (torch.autograd.graph.saved_tensors_hooks) while that step runs as
chunks of 1 (the least memory OTTT_A needs; exact like any chunking, so nothing is computed twice).
Later calls use the largest K <= T that fits. The bound is exact when every per-step saved tensor
grows with the chunk (conv nets); a K-independent tensor saved at every step is counted K times,
so the choice errs on the safe (smaller) side.

Counting convention (the same as the benchmark's saved_mb): each storage once, while autograd
holds it; parameters are not counted (every method keeps them); tensors the layers keep between
calls (their state) count once, whether saved or not.
"""
import dataclasses
import logging
import math
import re

import torch

from ._saved import Packed, state_storages, storage_key, unpack

logger = logging.getLogger("ottt_cuda.training")

_UNITS = {"": 1, "b": 1,
          "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_bytes(value, name="memory_budget"):
    """A byte count from a number (bytes) or a string such as "6GB" (10^9), "512MiB" (2^20), "1e9".
    Raises ValueError naming `name` for anything else, zero or negative."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} must be a number of bytes or a string like '6GB' or '512MiB', "
                         f"got {type(value).__name__}")
    if isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"{name} must be a number of bytes or a size like '6GB', '512MiB', '1e9' "
                             f"(units B, kB, MB, GB, TB = powers of 1000; KiB, MiB, GiB, TiB = powers of 1024), "
                             f"got {value!r}")
        value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of bytes > 0, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """What chunk="auto" chose, and from what (all in bytes). model.ottt_chunk_plan holds the last one."""
    chunk: int           # the chosen K
    budget: int
    fixed_bytes: int     # state (+ input, hoisted weights) during the time steps, independent of K
    per_step_bytes: int  # saved for backward per time step of a chunk
    outside_bytes: int   # peak outside the time steps (the hoisted WS weights' backward, with the state)
    T: int

    @property
    def estimate(self):
        """Upper bound of the step's memory at this chunk (state + saved for backward)."""
        return estimate(self.fixed_bytes, self.per_step_bytes, self.outside_bytes, self.chunk)

    def __str__(self):
        return (f"chunk='auto': chunk {self.chunk} of T={self.T} fits memory_budget {_mib(self.budget)} "
                f"(state {_mib(self.fixed_bytes)} + {self.chunk} x {_mib(self.per_step_bytes)} saved per time "
                f"step = {_mib(self.fixed_bytes + self.chunk * self.per_step_bytes)}; "
                f"{_mib(self.outside_bytes)} outside the time steps)")


def estimate(fixed, per_step, outside, k):
    """Peak bytes of an OTTT_A step with chunk k: the larger of a chunk's and what comes after."""
    return max(fixed + k * per_step, outside)


def _mib(n):
    return f"{n / 2 ** 20:.2f} MiB"


def choose_chunk(fixed, per_step, outside, budget, T):
    """The largest K in [1, T] whose estimate fits the budget; ValueError if K = 1 does not fit."""
    minimum = estimate(fixed, per_step, outside, 1)
    if minimum > budget:
        raise ValueError(f"memory_budget {budget} bytes ({_mib(budget)}) is too small: chunk 1 needs at least "
                         f"{minimum} bytes ({_mib(minimum)}: state {fixed} + {per_step} saved per time step, "
                         f"{outside} outside the time steps); raise memory_budget or lower the batch size")
    k = T if per_step == 0 else min(T, (budget - fixed) // per_step)
    return ChunkPlan(int(k), budget, fixed, per_step, outside, T)


class StepMemoryCounter:
    """Counts, while active, the peak model state (`fixed`) and the peak bytes saved for backward
    that are not state (`per_step`, for a chunk of one time step). Parameters are not counted;
    `held` tensors (the input, whose storage holds every time step) count in `fixed`, once, if saved."""

    def __init__(self, model, held=()):
        self.model = model
        self._params = {storage_key(p)[0] for p in model.parameters()}
        self._held = {}
        for t in held:
            key, nbytes = storage_key(t)
            self._held[key] = nbytes
        self._held_saved = set()  # held storages autograd saved: counted (once) in `fixed`
        self._live = {}  # key -> [references, bytes]
        self._outside_steps = set()  # saved before the first / after the last time step: not per step
        self._in_steps = False
        self.fixed = 0     # peak state + held + saved-outside-steps, during the time steps
        self.outside = 0   # peak of everything outside the time steps
        self.per_step = 0
        self._hooks = self._fwd = None

    def _pack(self, t):
        key, nbytes = storage_key(t)
        if key in self._params:
            return t
        if key in self._held:
            self._held_saved.add(key)
            return t
        ref = self._live.get(key)
        if not self._in_steps:
            self._outside_steps.add(key)
        if ref is None:
            self._live[key] = [1, nbytes]
        else:
            ref[0] += 1
        self._sample()
        return Packed(t, key, self)

    def release(self, key):  # (Packed.__del__)
        ref = self._live.get(key)
        if ref is not None:
            ref[0] -= 1
            if ref[0] == 0:
                del self._live[key]

    def _sample(self):
        skip = self._params | self._held.keys()
        state = state_storages(self.model, skip)
        saved = early = 0
        for k, (_, n) in self._live.items():
            if k in self._outside_steps:
                early += n if k not in state else 0
            elif k not in state:
                saved += n
        held = sum(self._held[k] for k in self._held_saved)
        if self._in_steps:
            self.fixed = max(self.fixed, held + early + sum(state.values()))
            self.per_step = max(self.per_step, saved)
        else:
            self.outside = max(self.outside, held + early + saved + sum(state.values()))

    def begin_steps(self):
        """From now on what is saved is per time step (until end_steps)."""
        self._in_steps = True

    def end_steps(self):
        """What is saved from now on (the hoisted WS weights' backward) is once per training step."""
        self._in_steps = False

    def start(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, unpack)
        self._hooks.__enter__()
        mods = {id(m) for m in self.model.modules()}

        def after_forward(module, _args, _out):
            if id(module) in mods:  # the state changes only inside the model's forwards
                self._sample()

        self._fwd = torch.nn.modules.module.register_module_forward_hook(after_forward)
        return self

    def stop(self):
        """Stop counting (idempotent); the tensors already saved keep their stand-ins."""
        if self._hooks is not None:
            self._fwd.remove()
            self._hooks.__exit__(None, None, None)
            self._hooks = self._fwd = None
            self._sample()


def cache_key(x, T, sequence, amp, training):
    return tuple(x.shape), x.dtype, str(x.device), T, bool(sequence), amp, bool(training)


def remember(model, key, counter):
    cache = model.__dict__.setdefault("_ottt_chunk_cache", {})
    cache[key] = (counter.fixed, counter.per_step, counter.outside)


def recall(model, key):
    return model.__dict__.get("_ottt_chunk_cache", {}).get(key)


def announce(model, plan):
    """Keep the plan on the model (model.ottt_chunk_plan) and log it when it changed."""
    if model.__dict__.get("ottt_chunk_plan") != plan:
        logger.info("%s", plan)
    model.__dict__["ottt_chunk_plan"] = plan
