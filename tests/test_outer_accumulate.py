"""outer_accumulate_: grad_w += alpha * g^T a, every backend vs the reference and vs a
float64 matmul, through both the small-batch kernel and the GEMM path."""
import pytest
import torch

import ottt_cuda
from conftest import TOL, kernel_params, strided, using_backend

BATCHES = [1, 3, 8, 9, 33]  # <= 8: the direct kernel; > 8: GEMM


def _expected(w0, g, a, alpha):
    gd = g.reshape(-1, w0.shape[0]).double()
    ad = a.reshape(-1, w0.shape[1]).double()
    return w0.double() + alpha * gd.t() @ ad


def _check(w, expected, in_dtype, k):
    rtol, atol = TOL[in_dtype] if w.dtype == in_dtype else TOL[torch.float32]
    # A sum of k products: the error bound grows with k.
    torch.testing.assert_close(w.double(), expected, rtol=rtol * (1 + k / 8), atol=atol * (1 + k))


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
    expected = _expected(w, g, a, 0.7)
    with using_backend(backend):
        returned = ottt_cuda.ops.outer_accumulate_(w, g, a, 0.7)
    assert returned is w
    _check(w, expected, dtype, batch)


@pytest.mark.parametrize("kp", kernel_params([torch.float16, torch.bfloat16]))
@pytest.mark.parametrize("batch", [2, 20])
def test_half_inputs_accumulate_in_float32(kp, batch):
    device, backend, dtype = kp
    gen = torch.Generator().manual_seed(5)
    g = torch.randn(batch, 6, generator=gen).to(device, dtype)
    a = torch.rand(batch, 4, generator=gen).to(device, dtype)
    w = torch.randn(6, 4, generator=gen).to(device)
    expected = _expected(w, g, a, 1.0)
    with using_backend(backend):
        ottt_cuda.ops.outer_accumulate_(w, g, a)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w.double(), expected, rtol=1e-5, atol=1e-5 * batch)


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
    _check(w, 2 * _expected(torch.zeros(5, 4, device=device, dtype=dtype), g, a, 0.5), dtype, 6 * batch)
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
