"""Backend choice: automatic per device, forced by set_backend or OTTT_BACKEND, and a
clear error (never a silent switch) when the forced one cannot run."""
import subprocess
import sys

import pytest
import torch

import ottt_cuda
from ottt_cuda import _backend
from conftest import using_backend


def test_build_info_keys():
    info = ottt_cuda.build_info()
    for key in ("version", "torch_version", "cpu_compiled", "cuda_compiled", "cuda_archs", "triton_available"):
        assert key in info
    assert info["version"] == ottt_cuda.__version__


def test_default_cpu_backend_is_compiled_when_built():
    expected = "cpu" if ottt_cuda.build_info()["cpu_compiled"] else "torch"
    with using_backend(None):
        assert ottt_cuda.get_backend("cpu") == expected
        assert ottt_cuda.get_backend(torch.device("cpu")) == expected


def test_set_backend_forces_and_restores():
    with using_backend("torch"):
        assert ottt_cuda.get_backend("cpu") == "torch"
    assert ottt_cuda.get_backend("cpu") == _backend._default("cpu")


def test_unknown_backend_name_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        ottt_cuda.set_backend("opencl")


def test_forced_backend_that_cannot_run_raises():
    with using_backend("cuda"):
        with pytest.raises(RuntimeError, match="backend 'cuda'.*cannot run on device 'cpu'"):
            ottt_cuda.ops.lif_step(torch.zeros(2))


def test_env_variable_forces_backend():
    code = "import ottt_cuda, torch; print(ottt_cuda.get_backend('cpu'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "OTTT_BACKEND": "torch"}, check=True)
    assert out.stdout.strip() == "torch"


def test_backends_agree_on_the_same_input():
    """The automatic choice and the reference produce the same spikes."""
    x = torch.randn(4, 9)
    with using_backend("torch"):
        s_ref, v_ref = ottt_cuda.ops.lif_step(x)
    s, v = ottt_cuda.ops.lif_step(x)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)
    torch.testing.assert_close(v, v_ref)
