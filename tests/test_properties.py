"""Hypothesis property tests: random shapes, strides and neuron parameters; the
compiled CPU kernels must agree with the reference on all of them."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ottt_cuda
from ottt_cuda import reference
from conftest import using_backend

pytestmark = pytest.mark.skipif(not ottt_cuda.build_info()["cpu_compiled"], reason="compiled extension not built")

shapes = st.lists(st.integers(0, 6), min_size=1, max_size=4)
neurons = st.fixed_dictionaries({
    "tau": st.floats(1.1, 8.0),
    "v_th": st.floats(0.2, 2.0),
    "v_reset": st.one_of(st.none(), st.floats(-0.5, 0.1)),
    "decay_input": st.booleans(),
    "surrogate": st.sampled_from(reference.SURROGATES),
    "alpha": st.floats(0.5, 6.0),
})


def _maybe_transposed(t, transpose):
    # The same values in a non-contiguous (transposed) layout; clone first so the
    # result never aliases t.
    return t.clone().transpose(0, -1).contiguous().transpose(0, -1) if transpose and t.dim() > 1 else t


@settings(max_examples=60, deadline=None)
@given(shape=shapes, neuron=neurons, seed=st.integers(0, 2**16), transpose=st.booleans(),
       trace_decay=st.floats(0.0, 1.0))
def test_lif_step_property(shape, neuron, seed, transpose, trace_decay):
    g = torch.Generator().manual_seed(seed)
    x = _maybe_transposed(torch.randn(shape, generator=g, dtype=torch.float64) * 2, transpose)
    v = _maybe_transposed(torch.rand(shape, generator=g, dtype=torch.float64), transpose)
    gy = torch.randn(shape, generator=g, dtype=torch.float64)
    xr, xk = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = reference.lif_step_ref(xr, v, trace_decay=trace_decay, **neuron)
    with using_backend("cpu"):
        out = ottt_cuda.ops.lif_step(xk, v, trace_decay=trace_decay, **neuron)
    torch.autograd.backward(ref[0], gy)
    torch.autograd.backward(out[0], gy)
    torch.testing.assert_close(out[0], ref[0], rtol=0, atol=0)
    for a, b in zip(out[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xk.grad, xr.grad, rtol=1e-10, atol=1e-12)
    # Soft reset keeps v below threshold whenever it did not fire.
    if neuron["v_reset"] is None:
        assert torch.all((out[0] == 1) | (out[1] < neuron["v_th"]))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, neuron=neurons, seed=st.integers(0, 2**16), steps=st.integers(0, 5))
def test_lif_multistep_property(shape, neuron, seed, steps):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([steps] + shape, generator=g, dtype=torch.float64) * 2
    gy = torch.randn([steps] + shape, generator=g, dtype=torch.float64)
    xr, xk = x.clone().requires_grad_(), x.clone().requires_grad_()
    s_r, v_r = reference.lif_multistep_ref(xr, **neuron)
    with using_backend("cpu"):
        s, v = ottt_cuda.ops.lif_multistep(xk, **neuron)
    torch.testing.assert_close(s, s_r, rtol=0, atol=0)
    torch.testing.assert_close(v, v_r, rtol=1e-10, atol=1e-12)
    if steps:
        (s_r * gy).sum().backward()
        (s * gy).sum().backward()
        torch.testing.assert_close(xk.grad, xr.grad, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(st.integers(0, 12), min_size=1, max_size=2), out_f=st.integers(0, 9),
       in_f=st.integers(0, 9), alpha=st.floats(-2.0, 2.0), seed=st.integers(0, 2**16),
       transpose_w=st.booleans())
def test_outer_accumulate_property(batch, out_f, in_f, alpha, seed, transpose_w):
    g = torch.Generator().manual_seed(seed)
    gg = torch.randn(batch + [out_f], generator=g, dtype=torch.float64)
    aa = torch.randn(batch + [in_f], generator=g, dtype=torch.float64)
    w0 = torch.randn(out_f, in_f, generator=g, dtype=torch.float64)
    # Column-major grad_w (a fresh buffer: w0.t().contiguous() may return w0 itself).
    w = (torch.empty_strided((out_f, in_f), (1, max(out_f, 1)), dtype=torch.float64).copy_(w0) if transpose_w
         else w0.clone())
    with using_backend("cpu"):
        ottt_cuda.ops.outer_accumulate_(w, gg, aa, alpha)
    expected = w0 + alpha * torch.einsum("...o,...i->oi", gg, aa)
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=1e-12)
