"""Every op at sizes the small tests never reach: on a GPU (skipped without one),
and the CUDA source on the emulated device (backend cuda_emu, CPU tensors). The
emulated machine of 2 SMs caps the grid at 64 blocks of 256 threads, so there
n = 2^21 + 13 already makes each grid-stride loop run 16 to 128 rounds (about as many
as 2^24 + 13 on a 132-SM GPU's 528 blocks); the emulator runs every thread on
the CPU, under a sanitizer in CI, so it takes the smaller size.

The small CUDA tests use ~200 elements: a grid-stride loop never takes a second
iteration there and a vectorized kernel never meets its scalar tail. Here: each
op x {cuda, triton} x four dtypes at n = 2^24 + 13 elements, contiguous and as
an unaligned view (buffer[1:], so vector loads are misaligned), against the
reference evaluated in float64 on the GPU; a float16 trace_update_ on more than
2^31 elements (64-bit indexing); lif_multistep over T = 64 steps.

Inputs are small multiples of 1/8 (dyadic), so the forward arithmetic is exact
in every dtype and in float64 alike: spikes and membranes must match the
float64 reference exactly, and only the surrogate gradients carry rounding.
"""
import pytest
import torch

from ottt_cuda import ops, reference
from conftest import assert_close, assert_grad_close, backend_params, using_backend

N = (1 << 24) + 13
N_EMU = (1 << 21) + 13
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SCALE_BACKENDS = [p for p in backend_params() if p.values[0][0] == "cuda" or p.values[0][1] == "cuda_emu"]


def size(backend):
    return N_EMU if backend == "cuda_emu" else N
LAYOUTS = ["contiguous", "unaligned"]


def _dyadic(shape, low, high, dtype, layout, gen, denom=8):
    """Integers in [low, high) / denom as `dtype` on gen's device; 'unaligned' returns
    the view buffer[1:] of a one-element-longer buffer (same values)."""
    numel = 1
    for s in shape:
        numel *= s
    vals = torch.randint(low, high, (numel,), generator=gen, device=gen.device).to(dtype) / denom
    if layout == "contiguous":
        return vals.view(shape)
    buf = torch.empty(numel + 1, dtype=dtype, device=gen.device)
    buf[1:] = vals
    view = buf[1:].view(shape)
    assert view.data_ptr() % 16 != 0
    return view


def _gen(device, seed):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dev_backend", SCALE_BACKENDS)
def test_lif_step_at_scale(dev_backend, dtype, layout):
    device, backend = dev_backend
    n = size(backend)
    g = _gen(device, 0)
    x = _dyadic((n,), -16, 24, dtype, layout, g).requires_grad_()
    v = _dyadic((n,), -16, 8, dtype, layout, g)
    trace = _dyadic((n,), 0, 32, dtype, layout, g, denom=16)
    mask = _dyadic((n,), 0, 2, dtype, layout, g, denom=0.5)  # {0, 2}: inverted dropout at p = 0.5
    grad = _dyadic((n,), -8, 8, dtype, layout, g)
    with using_backend(backend):
        spike, v_next, trace_next = ops.lif_step(x, v, trace=trace, trace_decay=0.5, mask=mask)
        (gx,) = torch.autograd.grad(spike, x, grad)
    x64 = x.detach().double().requires_grad_()
    r_spike, r_v, r_trace = reference.lif_step_ref(x64, v.double(), trace=trace.double(), trace_decay=0.5,
                                                   mask=mask.double())
    (r_gx,) = torch.autograd.grad(r_spike, x64, grad.double())
    assert spike.any() and not spike.all()  # both branches of the threshold taken
    torch.testing.assert_close(spike, r_spike.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(v_next, r_v.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(trace_next, r_trace.to(dtype), rtol=0, atol=0)
    assert_grad_close(gx, r_gx.to(dtype))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dev_backend", SCALE_BACKENDS)
def test_trace_update_at_scale(dev_backend, dtype, layout):
    device, backend = dev_backend
    n = size(backend)
    g = _gen(device, 1)
    a = _dyadic((n,), 0, 32, dtype, layout, g, denom=16)
    s = _dyadic((n,), 0, 2, dtype, layout, g, denom=1)
    expected = (0.5 * a.double() + s.double()).to(dtype)
    with using_backend(backend):
        out = ops.trace_update(a, s, 0.5)
        in_place = a.clone() if layout == "contiguous" else _dyadic((n,), 0, 1, dtype, layout, g)
        in_place.copy_(a)
        ops.trace_update_(in_place, s, 0.5)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(in_place, expected, rtol=0, atol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dev_backend", SCALE_BACKENDS)
def test_lif_multistep_at_scale(dev_backend, dtype, layout):
    device, backend = dev_backend
    n = size(backend)
    T, per_step = 4, (n - 1) // 4 + 1  # 4 * (n / 4 + 1) elements, more than n
    g = _gen(device, 2)
    x = _dyadic((T, per_step), -16, 24, dtype, layout, g).requires_grad_()
    grad = _dyadic((T, per_step), -8, 8, dtype, layout, g)
    with using_backend(backend):
        spikes, v_last = ops.lif_multistep(x)
        (gx,) = torch.autograd.grad(spikes, x, grad)
    x64 = x.detach().double().requires_grad_()
    r_spikes, r_v = reference.lif_multistep_ref(x64)
    (r_gx,) = torch.autograd.grad(r_spikes, x64, grad.double())
    assert spikes.any() and not spikes.all()
    torch.testing.assert_close(spikes, r_spikes.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(v_last, r_v.to(dtype), rtol=0, atol=0)
    assert_grad_close(gx, r_gx.to(dtype), scale=4)  # a sum over up to 4 steps


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows", [3, 40], ids=["small_batch", "gemm"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dev_backend", SCALE_BACKENDS)
def test_outer_accumulate_at_scale(dev_backend, dtype, rows, layout):
    # grad_w [1, n]: one long row, so the kernels' column tiling and the tail of
    # the last tile are exercised at n; `rows` picks the small-batch kernel or the GEMM.
    device, backend = dev_backend
    if backend == "cuda_emu" and rows > 8:
        pytest.skip("rows > 8 take ATen's GEMM, not an emulated kernel (small tests cover that route)")
    n = size(backend)
    g = _gen(device, 3)
    w_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    grad_w = _dyadic((1, n), -8, 8, w_dtype, layout, g)
    gv = _dyadic((rows, 1), -8, 8, dtype, "contiguous", g, denom=4)
    av = _dyadic((rows, n), 0, 4, dtype, layout, g, denom=2)
    expected = grad_w.double() + 0.5 * (gv.double().t() @ av.double())
    with using_backend(backend):
        ops.outer_accumulate_(grad_w, gv, av, 0.5)
    # Products and sums of these values are exact in the float32 accumulator.
    assert_close(grad_w.double(), expected, dtype=w_dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dev_backend", SCALE_BACKENDS)
def test_lif_multistep_64_steps(dev_backend, dtype):
    # Over 64 steps the membrane's binary expansion outgrows float32, so the
    # reference runs in the kernels' op-math type (reference.py widens fp16/bf16
    # to float32 as they do): the same operations in the same order.
    device, backend = dev_backend
    T, per_step = 64, (1 << 16) + 13
    g = _gen(device, 4)
    x = _dyadic((T, per_step), -16, 24, dtype, "unaligned", g).requires_grad_()
    grad = _dyadic((T, per_step), -8, 8, dtype, "contiguous", g)
    with using_backend(backend):
        spikes, v_last = ops.lif_multistep(x)
        (gx,) = torch.autograd.grad(spikes, x, grad)
    xr = x.detach().clone().requires_grad_()
    r_spikes, r_v = reference.lif_multistep_ref(xr)
    (r_gx,) = torch.autograd.grad(r_spikes, xr, grad)
    assert spikes[-1].any() and not spikes[-1].all()  # still firing at the last step
    frac = (spikes != r_spikes).double().mean().item()
    assert frac <= 1e-6, f"{frac:.2e} of the spikes differ from the reference"
    assert_close(v_last, r_v, scale=4)
    assert_grad_close(gx, r_gx, scale=8)


@pytest.mark.parametrize("dev_backend", SCALE_BACKENDS)
def test_trace_update_float16_beyond_2_31_elements(dev_backend):
    # 64-bit indexing: a kernel indexing in int32 would wrap past 2^31 and leave
    # the tail untouched (or write before the buffer). ~4.3 GB per tensor.
    device, backend = dev_backend
    if backend == "cuda_emu":
        pytest.skip("two 4.3 GB tensors do not fit a CI machine's memory next to the emulator")
    n = (1 << 31) + (1 << 20) + 7
    chunk = 1 << 28
    a = torch.empty(n, dtype=torch.float16, device=device)
    s = torch.empty_like(a)

    def pattern_a(i):  # trace values k/8, k in 0..7, from the global index
        return ((i // 3) % 8).to(torch.float16) / 8

    def pattern_s(i):
        return (i % 2).to(torch.float16)

    for lo in range(0, n, chunk):
        i = torch.arange(lo, min(lo + chunk, n), device=device)
        a[lo:lo + i.numel()] = pattern_a(i)
        s[lo:lo + i.numel()] = pattern_s(i)
    with using_backend(backend):
        ops.trace_update_(a, s, 0.5)
    for lo in (0, (1 << 31) - 4096, 1 << 31, n - 4096):  # both sides of 2^31, and the very end
        i = torch.arange(lo, lo + 4096, device=device)
        expected = (0.5 * pattern_a(i).double() + pattern_s(i).double()).to(torch.float16)
        torch.testing.assert_close(a[lo:lo + 4096], expected, rtol=0, atol=0, msg=f"elements from {lo}")
