"""benchmarks/fmnist_screen.py's arms change what they say and nothing else (issue 14's screens).
Each arm patches the R400 class or the data module in-process; the patches are undone after each test."""
import importlib
import math
import os
import sys

import pytest
import torch

import ottt_cuda
from ottt_cuda import models
from ottt_cuda.nn import _chain, _fast, recurrent, synapse
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
    monkeypatch.setattr(_chain, "F", _chain.F)
    monkeypatch.setattr(synapse, "F", synapse.F)
    monkeypatch.setattr(_chain, "_linear_backward", _chain._linear_backward)
    monkeypatch.setattr(_chain, "plan", _chain.plan)
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


def _tf32_ref(values):
    """TF32 rounding in float64 arithmetic, not on the bit pattern: x = m 2^e with m in [0.5, 1) keeps
    m to 11 bits (1 + 10 mantissa bits), rounded half to even (Python's round)."""
    out = []
    for v in values:
        if v == 0.0:
            out.append(v)
            continue
        m, e = math.frexp(v)
        out.append(math.ldexp(round(m * 2.0 ** 11), e - 11))
    return torch.tensor(out, dtype=torch.float64)


def test_tf32_rounds_to_ten_mantissa_bits_ties_to_even(screen):
    u = 2.0 ** -10  # TF32's unit in the last place at 1.0
    ties = [1 + u / 2, 1 + 3 * u / 2, -(1 + u / 2), -(1 + 3 * u / 2), 2 - u / 4, 0.75 + u / 4, 0.75 + 3 * u / 4]
    expected_ties = [1.0, 1 + 2 * u, -1.0, -(1 + 2 * u), 2.0, 0.75, 0.75 + u]  # below 1 the ulp is u / 2
    near = [1 + u / 2 + 2.0 ** -23, 1 + u / 2 - 2.0 ** -23, 3.0 * 2.0 ** -30, -7.5e4 - 1.0 / 3]
    g = torch.Generator().manual_seed(0)
    rand = (torch.randn(997, generator=g) * torch.exp(torch.randn(997, generator=g) * 8)).tolist()
    x = torch.tensor(ties + near + rand + [0.0, -0.0], dtype=torch.float32)
    got = screen.tf32(x)
    assert got.dtype == torch.float32 and got.shape == x.shape
    ref = _tf32_ref(x.double().tolist())
    assert torch.equal(got.double(), ref)
    assert got[:len(ties)].double().tolist() == expected_ties
    assert torch.signbit(got[-1]) and got[-1] == 0
    # Rounded values keep at most 11 significant bits: rounding twice changes nothing.
    assert torch.equal(screen.tf32(got), got)
    # Strided input, the shape kept.
    s = torch.randn(8, 6, generator=g).t()
    assert torch.equal(screen.tf32(s), screen.tf32(s.contiguous()))
    with pytest.raises(TypeError, match="float32"):
        screen.tf32(x.double())


def test_tf32_arm_rounds_the_operands_of_every_linear_product_of_the_ottt_step(screen):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g) * 6 - 2
    y = torch.randint(0, 10, (6,), generator=g)

    def grads():
        m = _build()
        torch.manual_seed(1)  # the same dropout mask in every run
        ottt_cuda.train_step(m, x, y, None, T=3, mode="ottt_a")
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    plain = grads()
    seen = {"linear": 0, "backward": 0}
    screen.apply({"tf32"})
    if not _fast.compiled(x):
        # Without the compiled kernels the step takes the autograd path, whose products the arm does
        # not round: it refuses instead of running a plain float32 step under its name.
        with pytest.raises(SystemExit, match="tf32: the training step would not run through nn._chain"):
            grads()
        return
    linear, backward = _chain.F.linear, _chain._linear_backward

    def counted_linear(*a):
        seen["linear"] += 1
        return linear(*a)

    def counted_backward(*a):
        seen["backward"] += 1
        return backward(*a)
    _chain.F.linear, _chain._linear_backward = counted_linear, counted_backward
    rounded = grads()
    # The step ran through the chain and the arm's pieces: per step F x and the readout (2, W s from the
    # second step on), and their backwards (the same count).
    assert seen == {"linear": 3 * 2 + 2, "backward": 3 * 2 + 2}
    # The same step at another rounding: gradients close to the float32 ones, but not the same.
    for n, p in plain.items():
        scale = p.abs().max()
        assert scale > 0, n
        diff = (rounded[n] - p).abs().max()
        assert 0 < diff < 0.05 * scale, n

    # The forward's linear: products of TF32 numbers summed in float32 (float64 reference from rounded
    # operands), away from the unrounded product.
    a = torch.randn(5, 37, generator=g)
    w = torch.randn(7, 37, generator=g)
    b = torch.randn(7, generator=g)
    out = _chain.F.linear(a, w, b)
    ref = screen.tf32(a).double() @ screen.tf32(w).double().t() + b.double()
    assert torch.allclose(out.double(), ref, rtol=0, atol=1e-5)
    assert (torch.nn.functional.linear(a, w, b).double() - ref).abs().max() > 1e-4
    assert synapse.F is _chain.F  # the evaluation's forward rounds as well


def test_tf32_arm_s_linear_follows_in_place_writes(screen):
    screen.apply({"tf32"})
    f = _chain.F
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 6, generator=g)
    x = torch.randn(2, 6, generator=g)
    assert torch.equal(f.linear(x, w), torch.nn.functional.linear(screen.tf32(x), screen.tf32(w)))
    w.mul_(1.5).add_(1 / 3)  # as an optimizer step does: the same tensor, new values
    assert torch.equal(f.linear(x, w), torch.nn.functional.linear(screen.tf32(x), screen.tf32(w)))
    x2 = x.view(2, 6)  # a view of the same memory (as Flatten makes at every step), written through
    x2[0, 0] = 1 / 3
    assert torch.equal(f.linear(x2, w), torch.nn.functional.linear(screen.tf32(x), screen.tf32(w)))
    # Strided operands: the same values as their contiguous copies.
    sq = torch.randn(6, 4, generator=g)
    ref = torch.nn.functional.linear(screen.tf32(x), screen.tf32(sq.t().contiguous()))
    assert torch.equal(f.linear(x, sq.t()), ref)


def test_unknown_arm_is_refused(screen):
    with pytest.raises(SystemExit, match="rec_zero"):
        screen.main(["rec_0", "0", "1", "ottt_a", "/nonexistent"])
