"""lif_multistep: every backend against the BPTT reference (a Python loop of LIF
steps with the membrane kept in the graph and the reset detached)."""
import pytest
import torch

import ottt_cuda
from ottt_cuda import reference
from conftest import NEURONS, assert_close, assert_grad_close, kernel_params, strided, using_backend

# Kernels compared with the reference: every backend but 'torch', which IS the reference. The
# reference itself is checked against the autograd loop written out below (all backends).
KERNELS = [p for p in kernel_params() if p.values[0][1] != "torch"]
# NEURONS has a threshold other than 1 only with a hard reset; a soft reset subtracts v_th, so
# it gets one too (and a tau whose 1 - 1/tau is not 0.5).
FORMULA_NEURONS = NEURONS + [pytest.param(dict(tau=4.0, v_th=0.7, alpha=3.0), id="soft-vth0.7-tau4")]
SHAPES = [(5, 7, 13), (1, 3), (4, 2, 3, 5), (0, 4), (3, 0, 2)]


def _seq(shape, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * 1.2 + 0.3).to(device, dtype)
    v0 = (torch.rand(shape[1:], generator=gen) - 0.2).to(device, dtype)
    return x, v0


def _run(backend, x, v0, neuron, gy, gv):
    xk = x.clone().requires_grad_()
    vk = v0.clone().requires_grad_()
    with using_backend(backend):
        s, v_last = ottt_cuda.ops.lif_multistep(xk, vk, **neuron)
    torch.autograd.backward([s, v_last], [gy, gv])
    return s, v_last, xk.grad, vk.grad


@pytest.mark.parametrize("kp", KERNELS)
@pytest.mark.parametrize("neuron", NEURONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_bptt_reference(kp, neuron, shape):
    device, backend, dtype = kp
    x, v0 = _seq(shape, device, dtype)
    gy = torch.randn(shape).to(device, dtype)
    gv = torch.randn(shape[1:]).to(device, dtype)
    s, v_last, gx, gv0 = _run(backend, x, v0, neuron, gy, gv)
    s_r, v_r, gx_r, gv0_r = _run("torch", x, v0, neuron, gy, gv)
    torch.testing.assert_close(s, s_r, rtol=0, atol=0)
    # Errors add up over T steps of the recurrence.
    assert_close(v_last, v_r, scale=4)
    assert_grad_close(gx, gx_r, scale=4)
    assert_grad_close(gv0, gv0_r, scale=4)


@pytest.mark.parametrize("kp", kernel_params([torch.float64]))
@pytest.mark.parametrize("neuron", FORMULA_NEURONS)
def test_gradient_equals_autograd_loop_of_reference_step(kp, neuron):
    """The fused BPTT backward equals autograd through a loop of reference LIF steps
    written here without detaching the membrane (reset detached), to float64 precision."""
    device, backend, dtype = kp
    cfg = dict(tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0)
    cfg.update(neuron)
    x, v0 = _seq((6, 4, 5), device, dtype, seed=1)
    x = 2 * x  # strong enough that the neurons with decay_input (h gets x / tau) fire too
    gy = torch.randn(6, 4, 5, dtype=dtype).to(device)

    xl, vl = x.clone().requires_grad_(), v0.clone().requires_grad_()
    v, spikes = vl, []
    for t in range(x.shape[0]):
        leak = v if cfg["v_reset"] is None else v - cfg["v_reset"]
        h = v + (xl[t] - leak) / cfg["tau"] if cfg["decay_input"] else v - leak / cfg["tau"] + xl[t]
        s = reference.heaviside(h - cfg["v_th"], cfg["surrogate"], cfg["alpha"])
        sd = s.detach()
        v = h - cfg["v_th"] * sd if cfg["v_reset"] is None else h * (1 - sd) + cfg["v_reset"] * sd
        spikes.append(s)
    (torch.stack(spikes) * gy).sum().backward()

    s, v_last, gx, gv0 = _run(backend, x, v0, neuron, gy, torch.zeros_like(v0))
    fired = torch.stack(spikes).detach()
    assert 0.1 < fired.mean() < 0.9  # both the fire and the no-fire branch are exercised
    torch.testing.assert_close(s, fired, rtol=0, atol=0)
    torch.testing.assert_close(v_last, v.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, xl.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gv0, vl.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kp", kernel_params([torch.float64]))
@pytest.mark.parametrize("neuron", NEURONS[:3])
def test_gradcheck_membrane_path(kp, neuron):
    """torch.autograd.gradcheck of v_last w.r.t. x_seq and v0: away from threshold
    crossings the membrane is piecewise linear and the detached reset is its exact
    local derivative, so finite differences must agree."""
    device, backend, dtype = kp
    x, v0 = _seq((4, 3, 2), device, dtype, seed=2)
    with using_backend(backend):
        assert torch.autograd.gradcheck(
            lambda xx, vv: ottt_cuda.ops.lif_multistep(xx, vv, **neuron)[1],
            (x.requires_grad_(), v0.requires_grad_()), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("kp", kernel_params([torch.float32]))
def test_equals_stepwise_forward_and_strided_input(kp):
    """Forward: the fused kernel equals T calls of lif_step; a strided x_seq gives the same result."""
    device, backend, dtype = kp
    x, v0 = _seq((5, 3, 6), device, dtype, seed=3)
    with using_backend(backend):
        s_seq, v_last = ottt_cuda.ops.lif_multistep(x, v0, v_reset=0.0)
        s_str, v_str = ottt_cuda.ops.lif_multistep(strided(x), strided(v0), v_reset=0.0)
        v = v0
        for t in range(x.shape[0]):
            s, v = ottt_cuda.ops.lif_step(x[t], v, v_reset=0.0)
            torch.testing.assert_close(s, s_seq[t], rtol=0, atol=0)
    torch.testing.assert_close(v, v_last)
    torch.testing.assert_close(s_str, s_seq, rtol=0, atol=0)
    torch.testing.assert_close(v_str, v_last)


@pytest.mark.parametrize("kp", kernel_params([torch.float32]))
def test_zero_steps_and_default_v0(kp):
    device, backend, dtype = kp
    x = torch.zeros(0, 3, 4, device=device, dtype=dtype)
    v0 = torch.rand(3, 4, device=device, dtype=dtype)
    with using_backend(backend):
        s, v_last = ottt_cuda.ops.lif_multistep(x, v0)
        s2, v2 = ottt_cuda.ops.lif_multistep(x)
        s3, _ = ottt_cuda.ops.lif_multistep(torch.full((2, 3, 4), 0.7, device=device, dtype=dtype))
    assert s.shape == (0, 3, 4)
    torch.testing.assert_close(v_last, v0)
    torch.testing.assert_close(v2, torch.zeros(3, 4, device=device, dtype=dtype))
    # From rest with input 0.7: h1 = 0.7 (no spike), h2 = 0.35 + 0.7 = 1.05 (spike).
    assert torch.all(s3[0] == 0) and torch.all(s3[1] == 1)
