"""The CPU kernels' vector paths, chosen at run time, agree. The float32 sigmoid surrogate backward
runs 16 lanes on an AVX-512 CPU (csrc/cpu/sigmoid_bwd_avx512.h) and 8 (AVX2) when ATEN_CPU_CAPABILITY
asks for less, as PyTorch's own CPU kernels do. Each path is run in a process of its own (the choice is
read once per process) on the same inputs: odd sizes around the vector widths, with and without a mask,
special membranes; each against the float64 formula and the two against each other."""
import os
import platform
import subprocess
import sys

import pytest
import torch

import ottt_cuda

ALPHAS = (0.5, 4.0, 25.0)
SIZES = (0, 1, 7, 8, 15, 16, 17, 31, 33, 100_003)  # both widths, their tails, several parallel chunks
SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, 30.0, -30.0, 1e30, -1e30, 1e-30, -0.0]

_SCRIPT = r"""
import sys, torch, ottt_cuda
torch.manual_seed(0)
out = {}
for n in SIZES:
    z = torch.randn(n) * 2.0
    if n >= len(SPECIAL):
        z[:len(SPECIAL)] = torch.tensor(SPECIAL)
    g = torch.randn(n)
    mask = (torch.rand(n) > 0.3).float() / 0.7
    for alpha in ALPHAS:
        for m in (None, mask):
            # decay_input=True: the gradient is scaled by 1/tau (in_scale) as well
            out[(n, alpha, m is not None)] = (z, g, m, torch.ops.ottt_cuda.lif_step_bwd(
                g, z, m, 2.0, 1.0, True, "sigmoid", alpha))
out["isa"] = ottt_cuda.build_info()["cpu_vector_isa"]
torch.save(out, sys.argv[1])
"""


def _run(tmp_path, capability):
    path = tmp_path / f"out_{capability or 'auto'}.pt"
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(ottt_cuda.__file__)))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    script = ("nan, inf = float('nan'), float('inf')\n"  # what repr() writes for them
              f"SIZES = {SIZES!r}\nALPHAS = {ALPHAS!r}\nSPECIAL = {SPECIAL!r}\n" + _SCRIPT)
    r = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return torch.load(path)


def _widest_isa():
    """What the CPU itself says (Linux: /proc/cpuinfo), independently of the extension."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags to check the path against")
    if {"avx2", "fma"} <= flags:
        return "avx512" if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags else "avx2"
    return "scalar"


def _formula(z, g, m, alpha):
    # d/dz sigmoid(alpha z) = alpha / (4 cosh^2(alpha z / 2)), in float64; times the mask and 1/tau
    zd = z.double()
    sg = alpha / (4 * torch.cosh(alpha * zd / 2) ** 2)
    sg = torch.where(torch.isnan(zd), zd, sg)
    gs = g.double() * (m.double() if m is not None else 1.0)
    return gs * sg * 0.5


@pytest.mark.skipif(not ottt_cuda.build_info()["cpu_compiled"], reason="needs the compiled CPU kernels")
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the vector paths are x86-64 ones")
def test_sigmoid_backward_paths_agree_with_the_formula_and_each_other(tmp_path):
    auto = _run(tmp_path, None)
    avx2 = _run(tmp_path, "avx2")
    # The path each process took: the widest this CPU has, and no AVX-512 when ATEN_CPU_CAPABILITY says avx2.
    isa_auto, isa_avx2 = auto.pop("isa"), avx2.pop("isa")
    # (not this process's build_info: the variable may be set here; both runs set or clear it themselves)
    assert isa_auto == _widest_isa()
    assert isa_avx2 == ("avx2" if isa_auto == "avx512" else isa_auto)
    assert auto.keys() == avx2.keys() and len(auto) == len(SIZES) * len(ALPHAS) * 2
    for key, (z, g, m, got) in auto.items():
        n, alpha, _ = key
        want = _formula(z, g, m, alpha)
        for name, out in (("auto", got), ("avx2", avx2[key][3])):
            assert out.dtype == torch.float32 and out.shape == (n,)
            assert torch.equal(torch.isnan(out), torch.isnan(want)), (name, key)
            # float32: exp's and the division's rounding, relative to the gradient's own scale
            torch.testing.assert_close(out.double(), want, rtol=2e-5, atol=1e-6 * alpha, equal_nan=True,
                                       msg=lambda s: f"{name} {key}: {s}")
        # The two paths differ by rounding only.
        torch.testing.assert_close(got, avx2[key][3], rtol=1e-5, atol=1e-7 * alpha, equal_nan=True)
