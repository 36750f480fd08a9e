"""trace_update / trace_update_: a_hat = decay * a_hat + s, every backend vs the reference."""
import pytest
import torch

import ottt_cuda
from conftest import assert_close, kernel_params, strided, using_backend

SHAPES = [(7, 13), (2, 3, 5), (0,), (1,), (4, 0, 3)]


@pytest.mark.parametrize("kp", kernel_params())
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9, 1.0])
def test_out_of_place_and_in_place_match_reference(kp, shape, decay):
    device, backend, dtype = kp
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(shape, generator=gen).to(device, dtype)
    s = (torch.rand(shape, generator=gen) > 0.5).to(device, dtype)
    # Written out here (not ottt_cuda.reference, which is the 'torch' backend under test).
    expected = (decay * a.double() + s.double()).to(dtype)
    with using_backend(backend):
        out = ottt_cuda.ops.trace_update(a, s, decay)
        zero = ottt_cuda.ops.trace_update(None, s, decay)
        a_inplace = a.clone()
        returned = ottt_cuda.ops.trace_update_(a_inplace, s, decay)
    assert_close(out, expected)
    torch.testing.assert_close(zero, s)
    assert returned is a_inplace
    assert_close(a_inplace, expected)


@pytest.mark.parametrize("kp", kernel_params([torch.float32, torch.float64]))
def test_strided_inputs_and_strided_in_place_trace(kp):
    device, backend, dtype = kp
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(5, 9, generator=gen).to(device, dtype)
    s = torch.rand(5, 9, generator=gen).to(device, dtype)
    expected = 0.5 * a + s
    base = torch.zeros(5, 18, device=device, dtype=dtype)
    view = base[:, ::2]
    view.copy_(a)
    with using_backend(backend):
        out = ottt_cuda.ops.trace_update(strided(a), strided(s), 0.5)
        ottt_cuda.ops.trace_update_(view, strided(s), 0.5)
    assert_close(out, expected)
    assert_close(base[:, ::2], expected)
    assert torch.all(base[:, 1::2] == 0)  # the untouched columns of the buffer


@pytest.mark.parametrize("kp", kernel_params([torch.float64]))
def test_gradcheck(kp):
    device, backend, dtype = kp
    a = torch.rand(3, 4, dtype=dtype, device=device, requires_grad=True)
    s = torch.rand(3, 4, dtype=dtype, device=device, requires_grad=True)
    with using_backend(backend):
        if backend == "triton":  # the Triton trace is not differentiated (OTTT treats it as a constant)
            out = ottt_cuda.ops.trace_update(a, s, 0.3)
            assert not out.requires_grad
            return
        assert torch.autograd.gradcheck(lambda aa, ss: ottt_cuda.ops.trace_update(aa, ss, 0.3), (a, s))


@pytest.mark.parametrize("kp", kernel_params([torch.float32]))
def test_running_trace_is_exponential_filter(kp):
    """After T steps the trace equals sum_t decay^(T-t) s[t], computed here in closed form."""
    device, backend, dtype = kp
    gen = torch.Generator().manual_seed(2)
    spikes = (torch.rand(6, 4, 5, generator=gen) > 0.6).to(device, dtype)
    weights = torch.tensor([0.5 ** (5 - t) for t in range(6)], device=device, dtype=dtype)
    expected = (weights[:, None, None] * spikes).sum(0)
    a = torch.zeros(4, 5, device=device, dtype=dtype)
    with using_backend(backend):
        for t in range(6):
            ottt_cuda.ops.trace_update_(a, spikes[t], 0.5)
    assert_close(a, expected)
