"""benchmarks/fmnist_screen.py's arms change what they say and nothing else (issue 14's screens).
Each arm patches the R400 class or the data module in-process; the patches are undone after each test."""
import importlib
import os
import sys

import pytest
import torch

import ottt_cuda
from ottt_cuda import models
from ottt_cuda.nn import recurrent
from ottt_cuda.train import data, runner

r400mod = importlib.import_module("ottt_cuda.models.r400")  # the module (ottt_cuda.models.r400 is the function)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def screen(monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import fmnist_screen
    finally:
        sys.path.pop(0)
    # Recorded here, so that monkeypatch puts them back whatever the arm replaced.
    monkeypatch.setattr(r400mod.R400, "__init__", r400mod.R400.__init__)
    monkeypatch.setattr(r400mod.R400, "forward", r400mod.R400.forward)
    monkeypatch.setattr(r400mod, "init_paper", r400mod.init_paper)
    monkeypatch.setattr(data, "FMNIST_MEAN", data.FMNIST_MEAN)
    monkeypatch.setattr(data, "FMNIST_STD", data.FMNIST_STD)
    monkeypatch.setattr(recurrent.RecurrentLIF, "_cell", recurrent.RecurrentLIF._cell)
    monkeypatch.setattr(runner, "build_optimizer", runner.build_optimizer)
    return fmnist_screen


def _build():
    torch.manual_seed(0)
    return models.r400(feedback_dropout=True, hidden=16)


def test_rec_zero_zeroes_the_recurrent_weights_only(screen):
    base = _build()
    assert base.rnn.recurrent.weight.abs().sum() > 0
    screen.apply({"rec_zero"})
    zeroed = _build()
    assert torch.count_nonzero(zeroed.rnn.recurrent.weight) == 0
    # Everything else as the recipe builds it, from the same seed (the zeroing draws nothing).
    for (name, p), (_, q) in zip(base.named_parameters(), zeroed.named_parameters()):
        if name != "rnn.recurrent.weight":
            assert torch.equal(p, q), name
    # A recurrent synapse at zero still learns: OTTT's gradient for it is g^T a_hat, not through W.
    assert zeroed.rnn.recurrent.weight.requires_grad


def test_rec_zero_combines_with_input_raw(screen):
    screen.apply({"rec_zero", "input_raw"})
    m = _build()
    assert torch.count_nonzero(m.rnn.recurrent.weight) == 0
    assert m.rnn.input.trace is False and m.rnn.recurrent.trace is True


def _readout_grads(mode, x, y):
    m = _build().double()
    torch.manual_seed(1)  # the same dropout mask in every run
    ottt_cuda.train_step(m, x, y, None, T=4, mode=mode)
    return m.readout.weight.grad


def test_readout_raw_gives_the_readout_bptt_s_exact_gradient(screen):
    # The readout is memoryless (o[t] = W s[t]) and the loss's gradient at o[t] is the same in every mode (the
    # forward is), so with s[t] instead of its trace OTTT_A's readout gradient is BPTT's, sum_t g[t]^T s[t].
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64) * 6 - 2
    y = torch.randint(0, 10, (6,), generator=g)
    exact = _readout_grads("bptt", x, y)
    traced = _readout_grads("ottt_a", x, y)
    assert exact.abs().max() > 0
    assert (traced - exact).abs().max() > 1e-3 * exact.abs().max()  # the recipe's trace: not the exact gradient
    screen.apply({"readout_raw"})
    m = _build()
    assert m.readout.trace is False and m.rnn.input.trace is True and m.rnn.recurrent.trace is True
    raw = _readout_grads("ottt_a", x, y)
    assert torch.allclose(raw, exact, rtol=1e-10, atol=1e-12)


def test_unknown_arm_is_refused(screen):
    with pytest.raises(SystemExit, match="rec_zero"):
        screen.main(["rec_0", "0", "1", "ottt_a", "/nonexistent"])
