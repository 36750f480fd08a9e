"""Builds ottt_cuda._C_cuda_emu: the CUDA kernels of csrc/cuda/ and their host
launch code, compiled by the C++ compiler against an emulated CUDA runtime
(csrc/cuda_emu/), registered for CPU tensors as the backend 'cuda_emu'.

It is never part of the package's install; CI builds it, and so can you:

    .venv/bin/python scripts/build_cuda_emu.py                      # plain, -O2
    .venv/bin/python scripts/build_cuda_emu.py --sanitize address,undefined
    .venv/bin/python scripts/build_cuda_emu.py --sanitize thread

The library lands in ottt_cuda/ (replacing any earlier build of it). A
sanitized build must run with the sanitizer's runtime preloaded into Python:
the script prints the LD_PRELOAD line to use.
"""
import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import sysconfig

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "_C_cuda_emu"
HOST_SOURCES = ["csrc/cuda/lif_step_cuda.cpp", "csrc/cuda/lif_multistep_cuda.cpp", "csrc/cuda/trace_update_cuda.cpp",
                "csrc/cuda/outer_accumulate_cuda.cpp"]
EMU_SOURCES = ["csrc/cuda_emu/emu_kernels.cpp", "csrc/cuda_emu/emu_module.cpp"]
SANITIZERS = ("address,undefined", "thread")
RUNTIME = {"address,undefined": "libasan.so", "thread": "libtsan.so"}


def _compiler():
    return os.environ.get("CXX", "c++")


def runtime_library(sanitize, cxx=None):
    """The path of the sanitizer runtime to preload for a build with `sanitize`."""
    out = subprocess.run([cxx or _compiler(), f"-print-file-name={RUNTIME[sanitize]}"], check=True,
                         capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(out):
        raise SystemExit(f"the compiler does not ship {RUNTIME[sanitize]} (got {out!r})")
    return out


def flags(sanitize):
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = cpp_extension.include_paths() + [sysconfig.get_paths()["include"], os.path.join(ROOT, "csrc")]
    cflags = ["-std=c++20", "-fPIC", "-fvisibility=hidden", "-DOTTT_CUDA_EMU", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
              "-DTORCH_API_INCLUDE_EXTENSION_H", f"-DTORCH_EXTENSION_NAME={NAME}",
              f'-DOTTT_TORCH_VERSION="{torch.__version__}"', "-Wall", "-Wno-unknown-pragmas", "-Wno-sign-compare",
              "-Wno-unused-function"]
    cflags += ["-isystem" + p for p in includes[:-1]] + ["-I" + includes[-1]]
    if sanitize:
        # -O1 keeps the reports' stacks readable and the run fast enough; every
        # finding aborts (no recovery), so a test run cannot pass over one.
        cflags += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}", "-fno-sanitize-recover=all",
                   f'-DOTTT_EMU_SANITIZE="{sanitize}"']
    else:
        cflags += ["-O2"]
    ldflags = ["-shared"] + [f"-L{p}" for p in cpp_extension.library_paths()]
    ldflags += [f"-Wl,-rpath,{p}" for p in cpp_extension.library_paths()]
    ldflags += ["-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]
    if sanitize:
        ldflags += [f"-fsanitize={sanitize}"]
    return cflags, ldflags


def build(sanitize=None, jobs=None, out_dir=None):
    """Compiles and links the extension; returns the path of the library in ottt_cuda/."""
    if sanitize is not None and sanitize not in SANITIZERS:
        raise SystemExit(f"--sanitize must be one of {SANITIZERS}, got {sanitize!r}")
    cxx = _compiler()
    cflags, ldflags = flags(sanitize)
    build_dir = os.path.join(ROOT, "build", "cuda_emu", (sanitize or "plain").replace(",", "_"))
    os.makedirs(build_dir, exist_ok=True)

    def compile_one(src):
        obj = os.path.join(build_dir, os.path.basename(src) + ".o")
        cmd = [cxx, *cflags, "-c", os.path.join(ROOT, src), "-o", obj]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"compiling {src} failed:\n{' '.join(cmd)}\n{done.stdout}{done.stderr}")
        if done.stderr.strip():
            print(done.stderr, file=sys.stderr)
        return obj

    with concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, EMU_SOURCES + HOST_SOURCES))
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    lib = os.path.join(build_dir, NAME + suffix)
    subprocess.run([cxx, *objects, *ldflags, "-o", lib], check=True)
    dest = os.path.join(out_dir or os.path.join(ROOT, "ottt_cuda"), NAME + suffix)
    shutil.copyfile(lib, dest + ".tmp")
    os.replace(dest + ".tmp", dest)
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sanitize", choices=SANITIZERS, default=None, help="build with these -fsanitize= checks")
    p.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: all cores)")
    args = p.parse_args(argv)
    dest = build(args.sanitize, args.jobs)
    print(f"built {os.path.relpath(dest, ROOT)}" + (f" with -fsanitize={args.sanitize}" if args.sanitize else ""))
    if args.sanitize:
        print(f"run it with: LD_PRELOAD={runtime_library(args.sanitize)} python ...")


if __name__ == "__main__":
    main()
