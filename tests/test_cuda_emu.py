"""The emulated CUDA launch (backend cuda_emu) itself: the hardware-limit checks
of a launch, the grid the launch code sizes on a small device, the fallback when
a device's attribute queries fail, results that do not depend on the threads'
order or on how many host threads run them, the vectorized and scalar paths at
sizes where grid-stride loops iterate, the small-batch outer-product kernel, and
a few training steps of the paper's models on the CUDA kernels against the CPU
kernels. The op-by-op tests on cuda_emu are the backend-parametrized ones of the
other files (id cpu-cuda_emu).

References are the pure-PyTorch functions of ottt_cuda.reference, or sums
written here in float64.
"""
import contextlib

import pytest
import torch

import ottt_cuda
from ottt_cuda import _cuda_emu, ops, reference
from conftest import HAS_CUDA_EMU, TOL, assert_close, using_backend

pytestmark = [pytest.mark.cuda_emu,
              pytest.mark.skipif(not HAS_CUDA_EMU, reason=f"the emulated CUDA extension: {_cuda_emu.LOAD_ERROR}")]

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
THREADS = 256  # threads per block of every element-wise kernel (kernel_utils.cuh)


def emu():
    return _cuda_emu.module()


@contextlib.contextmanager
def _setting(get, set_, value):
    """The emulated machine's setting (get, set_) at `value` for the block, then back."""
    previous = get()
    set_(value)
    try:
        yield
    finally:
        set_(previous)


def on_device(ordinal):
    return _setting(emu().current_device, emu().set_device, ordinal)


def host_threads(n):
    return _setting(emu().host_threads, emu().set_host_threads, n)


def grid_cap(sms, threads_per_sm=2048):
    """Four waves of resident 256-thread blocks: the most blocks a grid-stride launch may take."""
    return 4 * sms * threads_per_sm // THREADS


def values(n, dtype, gen, low=-16, high=24, offset=0):
    """n multiples of 1/8 (exact in every dtype) as a view starting `offset` elements into its buffer."""
    buf = torch.randint(low, high, (n + offset,), generator=gen).to(dtype) / 8
    return buf[offset:]


# ---- the launch configuration checks ------------------------------------------------

@pytest.mark.parametrize("grid, block, smem, says", [
    ((0, 1, 1), (256, 1, 1), 0, "grid (0, 1, 1) has a zero dimension"),
    ((1, 1, 1), (256, 0, 1), 0, "block (256, 0, 1) has a zero dimension"),
    ((1, 1, 1), (1025, 1, 1), 0, "exceeds 1024 threads in x or y"),
    ((1, 1, 1), (1, 1, 65), 0, "block.z = 65 exceeds 64"),
    ((1, 1, 1), (64, 32, 1), 0, "has 2048 threads, more than 1024"),
    ((1 << 31, 1, 1), (256, 1, 1), 0, "grid.x = 2147483648 exceeds 2^31 - 1"),
    ((1, 65536, 1), (256, 1, 1), 0, "grid.y = 65536 exceeds 65535"),
    ((1, 1, 65536), (256, 1, 1), 0, "grid.z = 65536 exceeds 65535"),
    ((1, 1, 1), (256, 1, 1), 48 * 1024 + 1, "dynamic shared memory of 49153 bytes exceeds 49152"),
])
def test_a_launch_beyond_the_hardware_limits_fails_naming_the_value(grid, block, smem, says):
    with pytest.raises(ValueError) as info:
        emu().check_configuration(grid, block, smem)
    assert "launch of noop_kernel" in str(info.value) and says in str(info.value)


@pytest.mark.parametrize("grid, block, smem", [
    ((1, 1, 1), (1024, 1, 1), 0), (((1 << 31) - 1, 65535, 65535), (256, 1, 1), 0), ((7, 3, 1), (32, 8, 4), 48 * 1024),
])
def test_a_launch_at_the_limits_is_accepted(grid, block, smem):
    emu().check_configuration(grid, block, smem)  # raises if refused


# ---- grid sizing on the emulated device -----------------------------------------------

@pytest.mark.parametrize("sms", [2, 3])
def test_grid_stride_launches_are_capped_by_the_device_size(sms):
    ordinal = 0 if sms == 2 else emu().add_device(sms)
    assert emu().device_properties(0)["sms"] == 2  # the default machine these tests assume
    n = 1 << 20  # 2^18 packs of 4 floats: far more than the cap's blocks x 256 threads
    x = values(n, torch.float32, torch.Generator().manual_seed(0))
    with on_device(ordinal), using_backend("cuda_emu"):
        s, v = ops.lif_step(x)
    launch = emu().last_launch()
    assert launch["kernel"] == "elementwise_kernel<Op, V>"  # the 16-byte path
    assert "LifStepFwdOp<float>" in launch["signature"]
    assert launch["grid"] == (grid_cap(sms), 1, 1) and launch["block"] == (THREADS, 1, 1)
    assert (n // 4) / (grid_cap(sms) * THREADS) >= 10  # each thread's loop ran at least 10 times
    s_ref, v_ref = reference.lif_step_ref(x)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)


def test_a_small_launch_takes_only_the_blocks_it_needs():
    x = values(1000, torch.float32, torch.Generator().manual_seed(0))
    with using_backend("cuda_emu"):
        ops.lif_step(x)
    assert emu().last_launch()["grid"] == (1, 1, 1)  # 250 packs of 4: one block of 256 threads
    with using_backend("cuda_emu"):
        ops.lif_step(x[1:])  # unaligned: one element per thread, 999 of them
    launch = emu().last_launch()
    assert launch["kernel"] == "elementwise_kernel<Op, 1>" and launch["grid"] == (4, 1, 1)


def test_a_device_whose_attribute_queries_fail_still_runs_the_ops():
    """The grid sizing falls back to a typical device, and the failed query is not
    left behind for the op's launch check to report as the op failing."""
    ordinal = emu().add_device(2, attribute_queries_fail=True)
    assert emu().device_properties(ordinal)["attribute_queries_fail"]
    n = 2 * THREADS * 100 + 3  # 100 blocks of float64 pairs: more than the 2-SM cap of 64
    gen = torch.Generator().manual_seed(3)
    x, v = values(n, torch.float64, gen), values(n, torch.float64, gen, -16, 8)
    with on_device(ordinal), using_backend("cuda_emu"):
        for _ in range(2):  # the first call queries (and fails), the second uses the cached fallback
            s, v_next = ops.lif_step(x, v)
            trace = ops.trace_update(None, s, 0.5)
    s_ref, v_ref = reference.lif_step_ref(x, v)
    assert torch.equal(s, s_ref) and torch.equal(v_next, v_ref) and torch.equal(trace, 0.0 * s_ref + s_ref)
    # the fallback (108 SMs of 2048 threads) caps at 3456 blocks: all 101 that the work needs
    assert emu().last_launch()["grid"] == (101, 1, 1)


# ---- order independence -----------------------------------------------------------------

def _every_op(gen, n, dtype):
    x = values(n, dtype, gen).requires_grad_()
    v, tr = values(n, dtype, gen, -16, 8), values(n, dtype, gen, 0, 8)
    s, v_next, tr_next = ops.lif_step(x, v, trace=tr, trace_decay=0.5)
    s.backward(values(n, dtype, gen, -8, 8))
    seq = values(3 * n, dtype, gen).view(3, n).requires_grad_()
    s_seq, v_last = ops.lif_multistep(seq)
    s_seq.backward(values(3 * n, dtype, gen, -8, 8).view(3, n))
    w = torch.zeros(37, 129, dtype=dtype)
    ops.outer_accumulate_(w, values(3 * 37, dtype, gen).view(3, 37), values(3 * 129, dtype, gen).view(3, 129))
    return [s, v_next, tr_next, x.grad, s_seq, v_last, seq.grad, w]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_results_do_not_depend_on_thread_order_or_host_threads(dtype):
    n = 3 * grid_cap(2) * THREADS * 4 + 7  # 3 grid-stride rounds of packs and a 7-element scalar tail
    runs = []
    for seed, threads in [(1, 1), (2, 1), (1, 2)]:
        emu().set_seed(seed)
        with host_threads(threads), using_backend("cuda_emu"):
            runs.append(_every_op(torch.Generator().manual_seed(5), n, dtype))
    emu().set_seed(20221)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


# ---- element-wise paths at sizes where the loops iterate -----------------------------------

@pytest.mark.parametrize("offset", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lif_step_vector_and_scalar_paths_match_the_reference(dtype, offset):
    width = 16 // torch.tensor([], dtype=dtype).element_size()
    n = 2 * grid_cap(2) * THREADS * width + width - 1  # two rounds of packs, the longest tail
    gen = torch.Generator().manual_seed(11)
    x, v = values(n, dtype, gen, offset=offset), values(n, dtype, gen, -16, 8, offset=offset)
    tr, mask = values(n, dtype, gen, 0, 8, offset=offset), (values(n, dtype, gen, 0, 2, offset=offset) * 16)
    grad = values(n, dtype, gen, -8, 8, offset=offset)
    aligned = all(t.data_ptr() % 16 == 0 for t in (x, v, tr, mask))
    with using_backend("cuda_emu"):
        xg = x.clone().requires_grad_()
        s, v_next, tr_next = ops.lif_step(xg, v, trace=tr, trace_decay=0.75, mask=mask)
        kernel = emu().last_launch()["kernel"]
        s.backward(grad)
    assert kernel == ("elementwise_kernel<Op, V>" if aligned else "elementwise_kernel<Op, 1>")
    xr = x.clone().requires_grad_()
    s_ref, v_ref, tr_ref = reference.lif_step_ref(xr, v, trace=tr, trace_decay=0.75, mask=mask)
    s_ref.backward(grad)
    assert torch.equal(s, s_ref) and torch.equal(v_next, v_ref) and torch.equal(tr_next, tr_ref)
    assert_close(xg.grad, xr.grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lif_multistep_over_many_steps_matches_the_reference(dtype):
    T, n = 40, grid_cap(2) * 64 * 3 + 5  # kSeqThreads = 64 per block: three rounds
    gen = torch.Generator().manual_seed(12)
    seq = values(T * n, dtype, gen, -8, 16).view(T, n)
    grad = values(T * n, dtype, gen, -8, 8).view(T, n)
    with using_backend("cuda_emu"):
        xs = seq.clone().requires_grad_()
        s, v_last = ops.lif_multistep(xs)
        s.backward(grad)
    xr = seq.clone().requires_grad_()
    s_ref, v_ref = reference.lif_multistep_ref(xr)
    s_ref.backward(grad)
    assert torch.equal(s, s_ref) and torch.equal(v_last, v_ref)
    assert_close(xs.grad, xr.grad, scale=4.0)


# ---- the small-batch outer-product kernel ---------------------------------------------------

@pytest.mark.parametrize("shape", [(10, 4096), (37, 129), (1, 1), (9, 31), (300, 7)], ids=str)
@pytest.mark.parametrize("batch", range(1, 9))
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                    (torch.float32, torch.bfloat16), (torch.float16, torch.float16)], ids=str)
def test_outer_accumulate_small_batches_match_a_float64_sum(dtypes, batch, shape):
    acc, inp = dtypes
    out, inn = shape
    gen = torch.Generator().manual_seed(batch)
    g, a = values(batch * out, inp, gen).view(batch, out), values(batch * inn, inp, gen).view(batch, inn)
    w0 = values(out * inn, acc, gen).view(out, inn)
    w = w0.clone()
    with using_backend("cuda_emu"):
        ops.outer_accumulate_(w, g, a, alpha=0.5)
    launch = emu().last_launch()
    assert launch["kernel"] == "outer_small_kernel<acc_t, in_t>"
    gx, ax = g.double(), a.double()
    expected = w0.double() + 0.5 * sum(gx[b, :, None] * ax[b, None, :] for b in range(batch))
    # The values are multiples of 1/8 below 3 in magnitude: every product and sum is exact in the float
    # accumulator, so the result carries one rounding to grad_w's dtype (float32 for half inputs).
    rtol, atol = TOL[acc]
    torch.testing.assert_close(w.double(), expected, rtol=rtol, atol=atol)


def test_outer_accumulate_wide_and_short_spreads_over_column_tiles():
    """A 10 x 4096 classifier weight: three groups of (at most) 4 rows, one per block of
    256 columns, and 16 column tiles (grid.y) to spread the row over."""
    w = torch.zeros(10, 4096)
    gen = torch.Generator().manual_seed(0)
    with using_backend("cuda_emu"):
        ops.outer_accumulate_(w, values(10, torch.float32, gen).view(1, 10), values(4096, torch.float32, gen).view(1, 4096))
    launch = emu().last_launch()
    assert launch["block"] == (THREADS, 1, 1) and launch["grid"] == (3, 4096 // THREADS, 1)


def test_outer_accumulate_strided_weight_is_written_back():
    gen = torch.Generator().manual_seed(1)
    buf = torch.zeros(37, 2 * 129)
    w = buf[:, ::2]
    g, a = values(3 * 37, torch.float64, gen).view(3, 37).float(), values(3 * 129, torch.float64, gen).view(3, 129).float()
    with using_backend("cuda_emu"):
        ops.outer_accumulate_(w, g, a)
    assert emu().last_launch()["kernel"] == "outer_small_kernel<acc_t, in_t>"
    torch.testing.assert_close(w.double(), g.double().t() @ a.double(), rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(buf[:, 1::2]) == 0


# ---- the paper's models, a few training steps -------------------------------------------------

def _train(make, x, y, mode, backend, steps=2):
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    with using_backend(backend):
        for _ in range(steps):
            loss, _ = ottt_cuda.train_step(model, x, y, opt, T=3, mode=mode)
            losses.append(float(loss))
    return losses, [p.detach().clone() for p in model.parameters()]


def _r400():
    torch.manual_seed(0)
    m = ottt_cuda.models.r400(in_features=36, hidden=24).double()
    with torch.no_grad():
        m.rnn.recurrent.weight.normal_(0, 0.5)
        m.rnn.input.bias.fill_(0.5)
    return m


def _small_vgg():
    torch.manual_seed(0)
    from ottt_cuda.models.vgg import VGGWS
    return VGGWS([8, "A", 16, 16], num_classes=10, in_channels=1).double()


@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o", "bptt"])
@pytest.mark.parametrize("make, shape", [(_r400, (3, 2, 1, 6, 6)), (_small_vgg, (2, 1, 8, 8))], ids=["r400", "vgg"])
def test_training_steps_on_the_cuda_kernels_match_the_cpu_kernels(make, shape, mode):
    gen = torch.Generator().manual_seed(7)
    x = 2.0 * torch.rand(shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (shape[-4],), generator=gen)
    emu().clear_launch_counts()
    emu_losses, emu_params = _train(make, x, y, mode, "cuda_emu")
    launched = " ".join(emu().launch_counts())
    cpu_losses, cpu_params = _train(make, x, y, mode, "cpu")
    assert emu_losses == pytest.approx(cpu_losses, rel=1e-12, abs=1e-12)
    for a, b in zip(emu_params, cpu_params):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # the kernels the step went through (signatures of their instantiations)
    expected = (["LifMultistepFwdArgs<double>", "LifMultistepBwdArgs<double>"] if mode == "bptt"
                else ["LifStepFwdOp<double>", "LifStepBwdOp<double>", "TraceOp<double>"])
    for kernel in expected:
        assert kernel in launched, f"{kernel} never launched: {launched}"
