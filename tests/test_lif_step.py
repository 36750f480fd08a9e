"""lif_step: every backend against the pure-PyTorch reference, forward and backward."""
import pytest
import torch

import ottt_cuda
from ottt_cuda import reference
from conftest import NEURONS, assert_close, assert_grad_close, kernel_params, strided, using_backend

# Kernels compared with the reference: every backend but 'torch', which IS the reference
# (comparing it with itself would assert nothing). The reference is checked against the
# formulas written out in this file instead (test_reference_equals_written_out_formulas).
KERNELS = [p for p in kernel_params() if p.values[0][1] != "torch"]
# NEURONS has a threshold other than 1 only with a hard reset; a soft reset subtracts v_th, so
# it gets one too (and a tau whose 1 - 1/tau is not 0.5).
FORMULA_NEURONS = NEURONS + [pytest.param(dict(tau=4.0, v_th=0.7, alpha=3.0), id="soft-vth0.7-tau4")]
SHAPES = [(7, 13), (3, 5, 4), (0, 5), (1,), (2, 33, 3)]


def _inputs(shape, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * 1.5).to(device, dtype)
    v = (torch.rand(shape, generator=gen) * 1.2 - 0.3).to(device, dtype)
    trace = torch.rand(shape, generator=gen).to(device, dtype)
    mask = (torch.rand(shape, generator=gen) > 0.3).to(device, dtype) / 0.7
    return x, v, trace, mask


@pytest.mark.parametrize("kp", KERNELS)
@pytest.mark.parametrize("neuron", NEURONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward_match_reference(kp, neuron, shape):
    device, backend, dtype = kp
    x, v, trace, mask = _inputs(shape, device, dtype)
    gy = torch.randn(shape).to(device, dtype)
    xr = x.clone().requires_grad_()
    ref = reference.lif_step_ref(xr, v, trace=trace, trace_decay=0.6, mask=mask, **neuron)
    ref[0].backward(gy)
    xk = x.clone().requires_grad_()
    with using_backend(backend):
        out = ottt_cuda.ops.lif_step(xk, v, trace=trace, trace_decay=0.6, mask=mask, **neuron)
    out[0].backward(gy)
    assert len(out) == 3
    torch.testing.assert_close(out[0], ref[0], rtol=0, atol=0)  # spikes exactly
    assert_close(out[1], ref[1])
    assert_close(out[2], ref[2])
    assert_grad_close(xk.grad, xr.grad)
    assert not out[1].requires_grad and not out[2].requires_grad  # membrane and trace detached


@pytest.mark.parametrize("kp", kernel_params())
@pytest.mark.parametrize("neuron", NEURONS[:3])
def test_no_state_and_strided_inputs(kp, neuron):
    """v=None is a zero membrane; strided inputs give the same result as dense ones."""
    device, backend, dtype = kp
    x, v, _, _ = _inputs((6, 9), device, dtype, seed=1)
    with using_backend(backend):
        s0, v0 = ottt_cuda.ops.lif_step(x, None, **neuron)
        s1, v1 = ottt_cuda.ops.lif_step(x, torch.zeros_like(x), **neuron)
        s2, v2 = ottt_cuda.ops.lif_step(strided(x), strided(v), **neuron)
        s3, v3 = ottt_cuda.ops.lif_step(x, v, **neuron)
    torch.testing.assert_close(s0, s1, rtol=0, atol=0)
    torch.testing.assert_close(v0, v1, rtol=0, atol=0)
    torch.testing.assert_close(s2, s3, rtol=0, atol=0)
    torch.testing.assert_close(v2, v3, rtol=0, atol=0)


def _step_formula(x, v, neuron, trace=None, trace_decay=None, mask=None):
    """docs/design.md section 1 written out in float64, independently of ottt_cuda.reference:
    charge, fire (H(0) = 1), soft or hard reset, masked spikes, trace of the output spikes."""
    cfg = dict(tau=2.0, v_th=1.0, v_reset=None, decay_input=False)
    cfg.update({k: neuron[k] for k in cfg if k in neuron})
    x, v = x.double(), v.double()
    if cfg["decay_input"]:  # h = v + (x - (v - v_reset)) / tau
        h = v + (x - (v - (cfg["v_reset"] or 0.0))) / cfg["tau"]
    else:  # h = v - (v - v_reset) / tau + x
        h = v - (v - (cfg["v_reset"] or 0.0)) / cfg["tau"] + x
    fired = h >= cfg["v_th"]
    if cfg["v_reset"] is None:
        v_next = torch.where(fired, h - cfg["v_th"], h)
    else:
        v_next = torch.where(fired, torch.full_like(h, cfg["v_reset"]), h)
    spike = fired.double() * (1.0 if mask is None else mask.double())
    out = (spike, v_next)
    if trace_decay is not None:
        out += (trace_decay * (0.0 if trace is None else trace.double()) + spike,)
    return out


@pytest.mark.parametrize("kp", kernel_params([torch.float32, torch.float64]))
@pytest.mark.parametrize("neuron", FORMULA_NEURONS)
def test_reference_equals_written_out_formulas(kp, neuron):
    """Every backend, the pure-PyTorch reference included, against the formulas above."""
    device, backend, dtype = kp
    x, v, trace, mask = _inputs((6, 11), device, dtype, seed=5)
    x = 2 * x  # strong enough that the neurons with decay_input (h gets x / tau) fire too
    with using_backend(backend):
        out = ottt_cuda.ops.lif_step(x, v, trace=trace, trace_decay=0.6, mask=mask, **neuron)
    expected = _step_formula(x, v, neuron, trace, 0.6, mask)
    fired = expected[0] != 0
    assert 0.1 < fired.double().mean() < 0.9  # both branches of fire and reset are exercised
    torch.testing.assert_close(out[0].double(), expected[0], rtol=1e-6, atol=0)
    for got, want in zip(out[1:], expected[1:]):
        assert_close(got.double(), want, dtype=dtype)


@pytest.mark.parametrize("kp", kernel_params([torch.float32]))
def test_broadcast_mask_and_zero_trace(kp):
    """A per-sample mask broadcasts over features; trace_decay without trace starts from zeros."""
    device, backend, dtype = kp
    x, v, _, _ = _inputs((4, 10), device, dtype, seed=2)
    mask = torch.tensor([[2.0], [0.0], [1.0], [0.5]], device=device, dtype=dtype)
    with using_backend(backend):
        s, _, tr = ottt_cuda.ops.lif_step(x, v, trace_decay=0.5, mask=mask)
    fired = (0.5 * v.double() + x.double() >= 1.0).double()  # default neuron: h = v/2 + x
    assert fired[0].sum() > 0 and fired[2].sum() > 0 and fired[3].sum() > 0
    torch.testing.assert_close(s.double(), fired * mask.double(), rtol=0, atol=0)
    torch.testing.assert_close(tr, s, rtol=0, atol=0)  # zero trace + spikes
    assert torch.all(s[1] == 0)


@pytest.mark.parametrize("kp", kernel_params([torch.float32]))
def test_dynamics_over_steps(kp):
    """Run several steps feeding v_next back: membrane stays below threshold after a
    soft reset (inputs in [0, v_th) keep h below 2 v_th), and spikes/traces follow the
    written-out formulas step after step."""
    device, backend, dtype = kp
    gen = torch.Generator().manual_seed(3)
    xs = [(torch.rand(5, 8, generator=gen) * 0.9).to(device, dtype) for _ in range(6)]
    v = tr = None
    v_f = tr_f = torch.zeros(5, 8, dtype=torch.float64, device=device)
    with using_backend(backend):
        for x in xs:
            s, v, tr = ottt_cuda.ops.lif_step(x, v, trace=tr, trace_decay=0.5)
            s_f, v_f, tr_f = _step_formula(x, v_f, {}, tr_f, 0.5)
            torch.testing.assert_close(s.double(), s_f, rtol=0, atol=0)
            assert_close(v.double(), v_f, dtype=dtype)
            assert_close(tr.double(), tr_f, dtype=dtype)
            assert torch.all(v < 1.0)
    assert tr_f.max() > 1.0  # several spikes accumulated in the trace


def _primitive(z, surrogate, alpha):
    """Antiderivatives of the surrogates, written here independently of the package."""
    if surrogate == "sigmoid":
        return torch.sigmoid(alpha * z)
    if surrogate == "atan":
        return torch.atan(torch.pi / 2 * alpha * z) / torch.pi + 0.5
    if surrogate == "triangle":
        u = (alpha * z).clamp(-1, 1)
        return torch.where(u < 0, 0.5 * (1 + u) ** 2, 1 - 0.5 * (1 - u) ** 2)
    return (alpha * z + 0.5).clamp(0, 1)


@pytest.mark.parametrize("kp", kernel_params([torch.float64]))
@pytest.mark.parametrize("neuron", FORMULA_NEURONS)
def test_surrogate_gradient_is_derivative_of_primitive(kp, neuron):
    """float64 gradient check: the backward equals the finite-difference derivative of
    the smooth function obtained by replacing H with the surrogate's primitive."""
    device, backend, dtype = kp
    cfg = dict(tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0)
    cfg.update(neuron)
    x, v, _, mask = _inputs((5, 7), device, dtype, seed=4)
    w = torch.randn(5, 7, dtype=dtype).to(device)

    def smooth(xx):
        leak = v if cfg["v_reset"] is None else v - cfg["v_reset"]
        h = v + (xx - leak) / cfg["tau"] if cfg["decay_input"] else v - leak / cfg["tau"] + xx
        return (w * mask * _primitive(h - cfg["v_th"], cfg["surrogate"], cfg["alpha"])).sum()

    xk = x.clone().requires_grad_()
    with using_backend(backend):
        s, _ = ottt_cuda.ops.lif_step(xk, v, mask=mask, **neuron)
    (w * s).sum().backward()
    eps = 1e-6
    for _ in range(3):
        d = torch.randn_like(x)
        fd = (smooth(x + eps * d) - smooth(x - eps * d)) / (2 * eps)
        torch.testing.assert_close((xk.grad * d).sum(), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kp", kernel_params([torch.float32]))
def test_saves_one_membrane_for_backward_and_nothing_without_grad(kp):
    """The docstring's promise: backward needs h only, one element per neuron; without
    requires_grad nothing is saved and no graph is built, and the forward is the same."""
    device, backend, dtype = kp
    x, v, _, _ = _inputs((3, 4), device, dtype)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with using_backend(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s, vn = ottt_cuda.ops.lif_step(x, v)
        assert saved == [] and s.grad_fn is None and vn.grad_fn is None
        xg = x.clone().requires_grad_()
        s_g, vn_g = ottt_cuda.ops.lif_step(xg, v)
    assert saved == [x.numel()], saved
    assert s_g.grad_fn is not None and vn_g.grad_fn is None
    torch.testing.assert_close(s_g, s, rtol=0, atol=0)
    torch.testing.assert_close(vn_g, vn, rtol=0, atol=0)
