"""Backend choice: automatic per device, forced by set_backend or OTTT_BACKEND, and a
clear error (never a silent switch) when the forced one cannot run."""
import subprocess
import sys

import pytest
import torch

import ottt_cuda
from ottt_cuda import _backend
from conftest import using_backend


def test_build_info_tells_the_truth():
    """Each entry agrees with what can be observed directly in this process."""
    import importlib.util
    info = ottt_cuda.build_info()
    assert info["version"] == ottt_cuda.__version__
    assert info["torch_runtime_version"] == torch.__version__
    assert info["cuda_device_available"] == torch.cuda.is_available()
    assert info["triton_available"] == (importlib.util.find_spec("triton") is not None)
    # the extension is loaded exactly when its ops are registered with torch, and an error is given otherwise
    registered = hasattr(torch.ops.ottt_cuda, "lif_step_fwd")
    assert info["extension_loaded"] == registered
    assert (info["extension_error"] is None) == info["extension_loaded"]
    assert not (info["cpu_compiled"] or info["cuda_compiled"]) or info["extension_loaded"]
    if info["extension_loaded"]:
        assert info["torch_version"].split(".")[:2] == torch.__version__.split(".")[:2]
    # which vector loop the CPU kernels take (tests/test_cpu_isa_paths.py checks it against the CPU's flags)
    assert info["cpu_vector_isa"] in (("avx512", "avx2", "scalar") if info["cpu_compiled"] else (None,))
    # cpu_compiled: forcing the compiled CPU backend runs exactly when it says so
    if info["cpu_compiled"]:
        with using_backend("cpu"):
            s, _ = ottt_cuda.ops.lif_step(torch.full((2,), 1.5))
        assert torch.equal(s, torch.ones(2))
    else:
        with using_backend("cpu"), pytest.raises(RuntimeError, match="backend 'cpu'"):
            ottt_cuda.ops.lif_step(torch.zeros(2))


def test_disabled_extension_is_reported_and_falls_back_to_torch():
    code = ("import json, warnings; warnings.simplefilter('ignore'); import ottt_cuda; "
            "print(json.dumps(dict(ottt_cuda.build_info(), backend=ottt_cuda.get_backend('cpu'))))")
    env = {**__import__("os").environ, "OTTT_DISABLE_EXTENSION": "1"}
    env.pop("OTTT_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    info = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert not info["extension_loaded"] and not info["cpu_compiled"] and not info["cuda_compiled"]
    assert "OTTT_DISABLE_EXTENSION" in info["extension_error"]
    assert info["backend"] == "torch"


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
