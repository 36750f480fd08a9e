"""outer_accumulate_: grad_w += alpha * g^T a, every backend vs the reference and vs a
float64 matmul, through both the small-batch kernel and the GEMM path."""
import pytest
import torch

import ottt_cuda
from conftest import kernel_params, strided, using_backend

BATCHES = [1, 3, 8, 9, 33]  # <= 8: the direct kernel; > 8: GEMM


def _expected(w0, g, a, alpha):
    gd = g.reshape(-1, w0.shape[0]).double()
    ad = a.reshape(-1, w0.shape[1]).double()
    return w0.double() + alpha * gd.t() @ ad


def _tolerance(w0, g, a, alpha, out_dtype):
    """How far from the exact float64 result a kernel may land: twice PyTorch's own error for
    the same reduction (addmm at the same precision: g, a in their dtype, grad_w in its own),
    plus one rounding of the output. PyTorch's error grows with the reduction length k as any
    correct kernel's does, so the bound follows k without being loose: it stays well below
    the contribution of a single sample, and a kernel that drops one of the k fails it."""
    k = max(1, g.reshape(-1, w0.shape[0]).shape[0])
    exact = _expected(w0, g, a, alpha)
    acc = torch.float64 if out_dtype == torch.float64 else torch.float32
    gk, ak = g.reshape(k, -1), a.reshape(k, -1)
    if out_dtype == g.dtype:  # PyTorch at the inputs' precision
        torch_own = torch.addmm(w0.to(g.dtype), gk.t(), ak, alpha=alpha)
    else:  # half inputs into a float32 buffer: PyTorch's float32 addmm of the (exact) widened inputs
        torch_own = torch.addmm(w0.to(acc), gk.t().to(acc), ak.to(acc), alpha=alpha)
    own = (torch_own.double() - exact).abs().max() if exact.numel() else torch.zeros((), dtype=torch.float64)
    magnitude = exact.abs().max() if exact.numel() else torch.zeros((), dtype=torch.float64)
    # A different summation order can move a result across a rounding boundary of out_dtype:
    # one unit in the last place of the largest result, and k roundings of the accumulator.
    sum_abs = (abs(alpha) * gk.double().abs().t() @ ak.double().abs()).max() if exact.numel() else 0.0
    return 2 * own + torch.finfo(out_dtype).eps * magnitude + k * torch.finfo(acc).eps * sum_abs, exact


def _check(w, w0, g, a, alpha):
    tol, exact = _tolerance(w0, g, a, alpha, w.dtype)
    err = (w.double() - exact).abs().max() if exact.numel() else 0.0
    assert err <= tol, f"max error {float(err):.3g} > tolerance {float(tol):.3g} (k = {g.numel() // max(1, g.shape[-1])})"


@pytest.mark.parametrize("kp", kernel_params())
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("out_in", [(5, 7), (17, 3), (1, 1)], ids=str)
def test_matches_matmul(kp, batch, out_in):
    device, backend, dtype = kp
    gen = torch.Generator().manual_seed(batch)
    o, i = out_in
    g = torch.randn(batch, o, generator=gen).to(device, dtype)
    a = torch.rand(batch, i, generator=gen).to(device, dtype)
    w = torch.randn(o, i, generator=gen).to(device, dtype)
    w0 = w.clone()
    with using_backend(backend):
        returned = ottt_cuda.ops.outer_accumulate_(w, g, a, 0.7)
    assert returned is w
    _check(w, w0, g, a, 0.7)


@pytest.mark.parametrize("kp", kernel_params([torch.float16, torch.bfloat16]))
@pytest.mark.parametrize("batch", [2, 20])
def test_half_inputs_accumulate_in_float32(kp, batch):
    device, backend, dtype = kp
    gen = torch.Generator().manual_seed(5)
    g = torch.randn(batch, 6, generator=gen).to(device, dtype)
    a = torch.rand(batch, 4, generator=gen).to(device, dtype)
    w = torch.randn(6, 4, generator=gen).to(device)
    w0 = w.clone()
    with using_backend(backend):
        ottt_cuda.ops.outer_accumulate_(w, g, a)
    assert w.dtype == torch.float32
    _check(w, w0, g, a, 1.0)


@pytest.mark.parametrize("kp", kernel_params([torch.float32, torch.float64]))
@pytest.mark.parametrize("batch", [2, 12])
def test_leading_dims_strided_and_repeated(kp, batch):
    """[T, B, ...] leading dims flatten into the batch; strided g, a and grad_w work;
    T successive calls accumulate (OTTT_A over T steps)."""
    device, backend, dtype = kp
    gen = torch.Generator().manual_seed(6)
    g = torch.randn(3, batch, 5, generator=gen).to(device, dtype)
    a = torch.rand(3, batch, 4, generator=gen).to(device, dtype)
    base = torch.zeros(5, 8, device=device, dtype=dtype)
    w = base[:, ::2]
    with using_backend(backend):
        ottt_cuda.ops.outer_accumulate_(w, strided(g), strided(a), 0.5)
        for t in range(3):
            ottt_cuda.ops.outer_accumulate_(w, g[t], a[t], 0.5)
    # The same k = 3 * batch samples went in twice: one reduction of length 6 * batch.
    _check(w, torch.zeros(5, 4, device=device, dtype=dtype), torch.cat([g, g]), torch.cat([a, a]), 0.5)
    assert torch.all(base[:, 1::2] == 0)


@pytest.mark.parametrize("kp", kernel_params([torch.float32]))
def test_empty_batch_and_empty_weight(kp):
    device, backend, dtype = kp
    w = torch.ones(3, 4, device=device, dtype=dtype)
    empty_w = torch.ones(0, 4, device=device, dtype=dtype)
    with using_backend(backend):
        ottt_cuda.ops.outer_accumulate_(w, torch.zeros(0, 3, device=device), torch.zeros(0, 4, device=device))
        ottt_cuda.ops.outer_accumulate_(empty_w, torch.ones(2, 0, device=device), torch.ones(2, 4, device=device))
    assert torch.all(w == 1) and empty_w.shape == (0, 4)
