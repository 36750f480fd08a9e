"""Shared test set-up: which (device, backend) pairs exist here, per-dtype
tolerances, and a context manager that forces a backend.

Without a GPU, Triton runs on CPU tensors through its interpreter, which must be
switched on before triton is first imported: that is done here, first thing. With
a GPU the Triton kernels are compiled for it and tested on CUDA tensors instead.
"""
import contextlib
import os

import torch  # importing torch does not import triton

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "0" if os.environ.get("OTTT_TEST_NO_TRITON") else "1")

import pytest  # noqa: E402

import ottt_cuda  # noqa: E402
from ottt_cuda import _backend, _cuda_emu  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
HAS_CUDA_EMU = _cuda_emu.loaded()
cuda_emu_only = pytest.mark.skipif(not HAS_CUDA_EMU, reason=f"the emulated CUDA extension: {_cuda_emu.LOAD_ERROR}")

# (rtol, atol) per dtype for values computed in the op-math type and rounded once.
TOL = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def backend_params():
    """pytest params of (device, backend): every compiled/JIT backend here, CUDA ones marked."""
    params = []
    if _backend.runs_on("cpu", "cpu"):
        params.append(pytest.param(("cpu", "cpu"), id="cpu-compiled"))
    if _backend.triton_available() and os.environ.get("TRITON_INTERPRET") == "1":
        params.append(pytest.param(("cpu", "triton"), id="cpu-triton", marks=pytest.mark.triton))
    params.append(pytest.param(("cpu", "torch"), id="cpu-torch"))
    # The CUDA source on the emulated device: listed (and skipped) without the emulated
    # extension, so that a run that should have had it shows what it missed.
    params.append(pytest.param(("cpu", "cuda_emu"), id="cpu-cuda_emu", marks=[pytest.mark.cuda_emu, cuda_emu_only]))
    params.append(pytest.param(("cuda", "cuda"), id="cuda-compiled", marks=[pytest.mark.cuda, cuda_only]))
    params.append(pytest.param(("cuda", "triton"), id="cuda-triton", marks=[pytest.mark.cuda, cuda_only]))
    return params


def dtypes_for(device, backend):
    """float32/float64 everywhere; half types where the backend supports them."""
    out = [torch.float32, torch.float64]
    if backend in ("cpu", "cuda", "cuda_emu", "torch") or device == "cuda":
        out += [torch.float16, torch.bfloat16]
    return out


@contextlib.contextmanager
def using_backend(name):
    previous = _backend._forced
    ottt_cuda.set_backend(name)
    try:
        yield
    finally:
        ottt_cuda.set_backend(previous)


def assert_close(actual, expected, dtype=None, scale=1.0):
    rtol, atol = TOL[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol * scale, atol=atol * scale)


def strided(t):
    """A non-contiguous tensor equal to t (every other column of a wider buffer)."""
    if t.dim() == 0:
        return t
    wide = torch.empty(*t.shape[:-1], t.shape[-1] * 2, dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    out = wide[..., ::2]
    assert not out.is_contiguous() or t.numel() <= 1
    return out


def kernel_params(dtypes=None):
    """(device, backend, dtype) params for every backend here and each dtype it supports."""
    out = []
    for p in backend_params():
        device, backend = p.values[0]
        for dt in dtypes_for(device, backend):
            if dtypes is not None and dt not in dtypes:
                continue
            out.append(pytest.param((device, backend, dt), id=f"{p.id}-{str(dt).split('.')[-1]}", marks=p.marks))
    return out


# Neuron configurations every LIF test runs over: soft/hard reset, decay_input,
# a non-default tau and threshold, and each surrogate.
NEURONS = [
    pytest.param(dict(), id="default"),
    pytest.param(dict(tau=3.0, decay_input=True, surrogate="atan", alpha=2.0), id="decay_input-atan"),
    pytest.param(dict(v_reset=0.0, surrogate="triangle", alpha=1.5), id="hard0-triangle"),
    pytest.param(dict(tau=1.7, v_th=0.8, v_reset=-0.2, decay_input=True, surrogate="rectangle", alpha=0.9),
                 id="hard-decay_input-rectangle"),
]


def assert_grad_close(actual, expected, scale=1.0, frac=0.02):
    """Gradients: close within tolerance, except that for fp16/bf16 up to `frac` of
    the elements may differ more: a saved value rounded to the half type can cross
    a kink of the surrogate (e.g. the rectangle's edges), which moves that element's
    gradient by a finite amount. float32/float64 allow no such exception."""
    rtol, atol = TOL[expected.dtype]
    rtol, atol = rtol * scale, atol * scale
    if expected.dtype in (torch.float32, torch.float64) or expected.numel() == 0:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
        return
    a, e = actual.double(), expected.double()
    bad = ((a - e).abs() > atol + rtol * e.abs()).double().mean().item()
    assert bad <= frac, f"{bad:.3%} of gradient elements differ beyond rtol={rtol}, atol={atol}"


@pytest.fixture
def restore_threads():
    """The training CLI's --threads changes torch's global thread count; give the next test its own back.
    Test files that run the CLI use it with `pytestmark = pytest.mark.usefixtures("restore_threads")`."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def graph_replays(monkeypatch):
    """Counts CUDA-graph replays (torch.cuda.CUDAGraph.replay calls) during a test: a one-element list."""
    count = [0]
    replay = torch.cuda.CUDAGraph.replay

    def counted(self):
        count[0] += 1
        return replay(self)

    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counted)
    return count
