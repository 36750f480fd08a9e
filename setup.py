"""Builds ottt_cuda._C: the CPU kernels always, the CUDA kernels when torch is a
CUDA build and nvcc is found (or OTTT_FORCE_CUDA=1), never with OTTT_CPU_ONLY=1.

    pip install --no-build-isolation -e .      # torch must already be installed

Environment knobs: OTTT_CPU_ONLY, OTTT_FORCE_CUDA, TORCH_CUDA_ARCH_LIST (needed
when no GPU is visible, e.g. "8.0;9.0"), CUDA_HOME, MAX_JOBS.
"""
import glob
import os
import sysconfig

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda():
    if _flag("OTTT_CPU_ONLY"):
        return False
    if _flag("OTTT_FORCE_CUDA"):
        return True
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _cuda_wheel_includes():
    # pip's CUDA 13 torch keeps cuBLAS/cuSPARSE headers under nvidia/cu13/include,
    # not in CUDA_HOME; torch's ATen CUDA headers include them.
    site = sysconfig.get_paths()["purelib"]
    return [p for p in glob.glob(os.path.join(site, "nvidia", "cu*", "include")) if os.path.isdir(p)]


def _extension():
    with_cuda = _want_cuda()
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = ["csrc/ops_registration.cpp", "csrc/fast_calls.cpp", "csrc/inplace_versions.cpp"] + rel("csrc/cpu/*.cpp")
    std = "-std=c++20"  # torch >= 2.13 headers need C++20; older torch accepts it too
    defines = ['-DOTTT_TORCH_VERSION="%s"' % torch.__version__]
    cxx = ["-O3", std, "-fopenmp"] + defines
    kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[os.path.join(ROOT, "csrc")])
    if not with_cuda:
        return cpp_extension.CppExtension("ottt_cuda._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    defines += ["-DOTTT_WITH_CUDA", '-DOTTT_CUDA_ARCHS="%s"' % archs]
    cxx = ["-O3", std, "-fopenmp"] + defines
    # No --use_fast_math: these kernels are memory-bound, and exact exp/division keep
    # the surrogates bit-close to the CPU kernels the tests compare against.
    nvcc = ["-O3", std, "-lineinfo"] + defines
    sources += rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu")
    kwargs["include_dirs"] += _cuda_wheel_includes()
    return cpp_extension.CUDAExtension("ottt_cuda._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)


setup(
    name="ottt_cuda",
    version=VERSION,
    description="Fused kernels for Online Training Through Time of spiking neural networks",
    packages=find_packages(include=["ottt_cuda", "ottt_cuda.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    python_requires=">=3.9",
    # tqdm: the progress bars of ottt_cuda.train and ottt_cuda.bench
    install_requires=["torch>=2.4", "tqdm"],
    entry_points={"console_scripts": ["ottt-train = ottt_cuda.train.cli:main"]},
    extras_require={"test": ["pytest", "hypothesis", "numpy", "expecttest"], "bench": ["matplotlib"]},
)
