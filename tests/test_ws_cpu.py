"""The fused CPU kernels of scaled weight standardization (csrc/cpu/ws_cpu.cpp, used by
ottt_cuda/nn/ws.py): W_hat, the row statistics and the closed-form backward must equal an
independent float64 autograd reference (ws.standardize, torch ops only) and the torch
expressions they replace, for odd sizes, conv weights, with and without a gain; the cases
they do not take (zero-size, strided, other dtypes) keep the torch path; and a WS layer's
training gradients are unchanged (float64) with the kernels on or off."""
import pytest
import torch

from ottt_cuda.nn import ws
from ottt_cuda import nn as onn

fused = pytest.mark.skipif(ws._WS_FORWARD_CPU is None or ws._WS_BACKWARD_CPU is None,
                           reason="compiled extension with the WS kernels not loaded")
SHAPES = [(400, 784), (7, 13), (5, 3, 3, 3), (1, 17), (33, 2)]
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}
EPS = 1e-4


def _case(shape, dtype, with_gain, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(shape, generator=gen) * 0.05 + 0.01).to(dtype)
    gain = (torch.rand(shape[0], *[1] * (len(shape) - 1), generator=gen) + 0.5).to(dtype) if with_gain else None
    grad = torch.randn(shape, generator=gen).to(dtype)
    return w, gain, grad


def _reference(w, gain, grad):
    """float64 autograd through ws.standardize (torch ops only): (W_hat, grad_W, grad_gain)."""
    wd = w.double().requires_grad_()
    gd = gain.double().requires_grad_() if gain is not None else None
    w_hat = ws.standardize(wd, gd, EPS)
    (w_hat * grad.double()).sum().backward()
    return w_hat.detach(), wd.grad, (gd.grad if gd is not None else None)


@pytest.fixture
def torch_path(monkeypatch):
    """The torch expressions the kernels replace (the kernels switched off)."""
    def run(fn, *args):
        with monkeypatch.context() as m:
            m.setattr(ws, "_WS_FORWARD_CPU", None)
            m.setattr(ws, "_WS_BACKWARD_CPU", None)
            return fn(*args)
    return run


@fused
@pytest.mark.parametrize("with_gain", [True, False], ids=["gain", "no_gain"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_the_reference(shape, dtype, with_gain, torch_path):
    w, gain, grad = _case(shape, dtype, with_gain)
    want_hat, want_gw, want_gg = _reference(w, gain, grad)
    w_hat, mean, scale = ws._standardized_and_stats(w, gain, EPS)
    assert mean.shape == scale.shape == (shape[0],) + (1,) * (len(shape) - 1)
    torch.testing.assert_close(w_hat.double(), want_hat, **TOL[dtype])
    gw, gg = ws.standardize_backward(w, gain, mean, scale, grad)
    assert gw.dtype == dtype and gw.shape == w.shape
    torch.testing.assert_close(gw.double(), want_gw, **TOL[dtype])
    if with_gain:
        torch.testing.assert_close(gg.double(), want_gg, **TOL[dtype])
    else:
        assert gg is None
    # and the torch expressions they replace, from the same statistics
    t_hat, t_mean, t_scale = torch_path(ws._standardized_and_stats, w, gain, EPS)
    torch.testing.assert_close(w_hat, t_hat, **TOL[dtype])
    torch.testing.assert_close(mean, t_mean, **TOL[dtype])
    torch.testing.assert_close(scale, t_scale, **TOL[dtype])
    t_gw, t_gg = torch_path(ws.standardize_backward, w, gain, mean, scale, grad)
    torch.testing.assert_close(gw, t_gw, **TOL[dtype])


@fused
def test_the_kernels_run_for_a_contiguous_cpu_weight(monkeypatch):
    # what the dispatch in ws.py decides: the kernels are called (counted), not only equal
    calls = []
    for name in ("_WS_FORWARD_CPU", "_WS_BACKWARD_CPU"):
        kernel = getattr(ws, name)
        monkeypatch.setattr(ws, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    w, gain, grad = _case((6, 10), torch.float32, True)
    _, mean, scale = ws._standardized_and_stats(w, gain, EPS)
    ws.standardize_backward(w, gain, mean, scale, grad)
    assert calls == ["_WS_FORWARD_CPU", "_WS_BACKWARD_CPU"]
    calls.clear()
    for odd in (w.t().contiguous().t(), w.half(), w[:0]):  # strided, float16, zero-size: the torch path
        ws._standardized_and_stats(odd, None, EPS)
    assert calls == []


def test_fan_in_one_is_nan_as_the_torch_path(torch_path):
    w, gain, grad = _case((3, 1), torch.float64, True)
    w_hat, mean, scale = ws._standardized_and_stats(w, gain, EPS)
    t_hat, _, t_scale = torch_path(ws._standardized_and_stats, w, gain, EPS)
    assert torch.isnan(scale).all() and torch.isnan(t_scale).all()
    assert torch.isnan(w_hat).all() and torch.isnan(t_hat).all()


@pytest.mark.parametrize("shape", [(0, 5), (4, 0)], ids=str)
def test_zero_size_weights(shape, torch_path):
    w, gain, grad = _case(shape, torch.float32, True)
    got = ws._standardized_and_stats(w, gain, EPS)
    want = torch_path(ws._standardized_and_stats, w, gain, EPS)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, equal_nan=True)


def test_strided_weight_matches_the_reference():
    w, gain, grad = _case((9, 20), torch.float64, True)
    strided = w.t().contiguous().t()  # same values, column-major
    assert not strided.is_contiguous()
    want_hat, want_gw, want_gg = _reference(w, gain, grad)
    w_hat, mean, scale = ws._standardized_and_stats(strided, gain, EPS)
    torch.testing.assert_close(w_hat, want_hat, **TOL[torch.float64])
    gw, gg = ws.standardize_backward(strided, gain, mean, scale, grad)
    torch.testing.assert_close(gw, want_gw, **TOL[torch.float64])
    torch.testing.assert_close(gg, want_gg, **TOL[torch.float64])


@fused
@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
def test_ws_layer_gradients_unchanged_with_the_kernels(mode, monkeypatch):
    """A WS network's training step in float64: the same gradients (hoisted path for ottt_a, the
    per-call _Standardized for ottt_o) with the fused kernels as with the torch expressions."""
    from ottt_cuda.training import train_step

    def run(use_kernels):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), onn.WSLinear(20, 16), onn.LIF(), onn.WSLinear(16, 4)).double()
        x = torch.rand(3, 4, 5, dtype=torch.float64)
        y = torch.tensor([0, 3, 1])
        with monkeypatch.context() as m:
            if not use_kernels:
                m.setattr(ws, "_WS_FORWARD_CPU", None)
                m.setattr(ws, "_WS_BACKWARD_CPU", None)
            opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: grads of the same weights at every step
            train_step(net, x, y, opt, T=4, mode=mode)
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    on, off = run(True), run(False)
    assert on.keys() == off.keys() and len(on) == 6
    for name in on:
        torch.testing.assert_close(on[name], off[name], rtol=1e-12, atol=1e-14, msg=name)
        assert on[name].abs().sum() > 0, name


@fused
@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
@pytest.mark.parametrize("B", [1, 8])
def test_r400_gradients_unchanged_with_the_kernels(mode, B, monkeypatch):
    """The recurrent model's sWS input synapse (RecurrentLIF(ws=True), through the autograd-free step): the
    same gradients with the fused kernels as with the torch expressions, at batch 1 and 8, in float64."""
    from _chain_models import make_input, r400_small
    from ottt_cuda.training import train_step

    x, y = make_input((1, 6, 6), T=4, B=B)

    calls = []

    def counted(kernel):
        def call(*a, **kw):
            calls.append(kernel)
            return kernel(*a, **kw)
        return call

    def run(use_kernels):
        net = r400_small()
        with monkeypatch.context() as m:
            for name in ("_WS_FORWARD_CPU", "_WS_BACKWARD_CPU"):
                m.setattr(ws, name, counted(getattr(ws, name)) if use_kernels else None)
            opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: grads of the same weights at every step
            torch.manual_seed(2)  # the same dropout mask in both runs
            train_step(net, x, y, opt, T=4, mode=mode)
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    on = run(True)
    assert {ws._WS_FORWARD_CPU, ws._WS_BACKWARD_CPU} <= set(calls), "the fused kernels did not run"
    off = run(False)
    assert on.keys() == off.keys() and any("gain" in n for n in on)
    for name in on:
        torch.testing.assert_close(on[name], off[name], rtol=1e-12, atol=1e-14, msg=name)
        assert on[name].abs().sum() > 0, name
