"""Liveness of spiking layers for model-level tests.

A comparison of two networks means little when a spiking layer never fires (or
always fires): everything after it is then a constant, and the compared output
is just the last layer's bias. Model-level tests record the firing rate of every
spiking layer at every step they run and require it to lie in [LOW, HIGH]
before they compare anything.
"""
import contextlib

from ottt_cuda import nn as onn

LOW, HIGH = 0.05, 0.95


def _is_lif(m):
    # A RecurrentLIF calls its neuron's step() directly (no forward hook runs there): record the cell's output.
    return isinstance(m, (onn.LIF, onn.RecurrentLIF))


def _step_rates(module, out):
    """Per-step firing rates of one call's output (a tensor, or SpikingJelly's [spike, trace])."""
    s = out[0] if isinstance(out, (tuple, list)) else out
    s = s.detach().double()
    if getattr(module, "step_mode", "s") != "m":
        return [s.mean().item()]
    seq_len = getattr(module, "seq_len", None)
    if seq_len is not None:  # time-major flattened [T*B, ...]
        s = s.unflatten(0, (seq_len, -1))
    return s.flatten(1).mean(1).tolist()  # [T, B, ...]


@contextlib.contextmanager
def recording(model, is_neuron=_is_lif):
    """Yield {layer name: [rate at each step run]} for every spiking layer of `model`."""
    rates, hooks = {}, []
    inner = {id(m.neuron) for m in model.modules() if isinstance(m, onn.RecurrentLIF)}
    for name, m in model.named_modules():
        if is_neuron(m) and id(m) not in inner:
            rates[name or type(m).__name__] = []
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, key=name or type(m).__name__: rates[key].extend(_step_rates(mod, out))))
    try:
        yield rates
    finally:
        for h in hooks:
            h.remove()


def assert_fires(rates, low=LOW, high=HIGH):
    """Every recorded layer ran and fired at a rate in [low, high] at every step."""
    assert rates, "no spiking layer was found in the model"
    bad = {n: [round(r, 3) for r in rs] for n, rs in rates.items() if not rs or not all(low <= r <= high for r in rs)}
    assert not bad, f"spiking layers outside the firing-rate band [{low}, {high}] (rates per step): {bad}"


def fires(model, run, is_neuron=_is_lif, low=LOW, high=HIGH):
    """Run `run()` while recording `model`'s spiking layers, assert that each fires, return run()'s result."""
    with recording(model, is_neuron) as rates:
        result = run()
    assert_fires(rates, low, high)
    return result


@contextlib.contextmanager
def watched_models(low=LOW, high=HIGH):
    """Yield watch(model) -> model. On a normal exit every watched model that ran must have had each of its
    spiking layers fire at every step (a model built only to read its parameters is not checked)."""
    stack, records = contextlib.ExitStack(), []

    def watch(model):
        records.append(stack.enter_context(recording(model)))
        return model

    with stack:
        yield watch
    for rates in records:
        if any(rates.values()):
            assert_fires(rates, low, high)


class ModelWatch:
    """A test module's firing watch: its model builders return watch(model), and an autouse fixture runs each
    test inside `with watch.active():`, so every model a test builds and runs is checked by watched_models.
    Outside a test (no active watch) watch(model) just returns the model."""

    def __init__(self):
        self._current = None

    def __call__(self, model):
        return model if self._current is None else self._current(model)

    @contextlib.contextmanager
    def active(self, low=LOW, high=HIGH):
        with watched_models(low, high) as self._current:
            yield
        self._current = None
