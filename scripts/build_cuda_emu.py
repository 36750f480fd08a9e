"""Builds ottt_cuda._C_cuda_emu: the CUDA kernels of csrc/cuda/ and their host
launch code, compiled by the C++ compiler against an emulated CUDA runtime
(csrc/cuda_emu/), registered for CPU tensors as the backend 'cuda_emu'.

It is never part of the package's install; CI builds it, and so can you:

    .venv/bin/python scripts/build_cuda_emu.py                      # plain, -O2
    .venv/bin/python scripts/build_cuda_emu.py --sanitize address,undefined
    .venv/bin/python scripts/build_cuda_emu.py --sanitize thread

The library lands in ottt_cuda/ (replacing any earlier build of it). A
sanitized build instruments the kernels, their launchers and the emulated
launch (what the emulated threads run); the host entry points, which only
check arguments and allocate through ATen, are built once, uninstrumented, and
shared by every variant. Objects are reused while their sources and flags are
unchanged, so after a kernel edit only the kernels recompile. A sanitized build
must run with the sanitizer's runtime preloaded into Python: the script prints
the LD_PRELOAD line to use.
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
# The host side (the op entry points of csrc/cuda/ and the module), built once
# and shared by every variant: it parses torch's headers (most of the build
# time) and touches no tensor memory itself.
HOST_SOURCES = ["csrc/cuda_emu/emu_module.cpp", "csrc/cuda/lif_step_cuda.cpp", "csrc/cuda/lif_multistep_cuda.cpp",
                "csrc/cuda/trace_update_cuda.cpp", "csrc/cuda/outer_accumulate_cuda.cpp"]
# The kernels, their launchers and the emulated launch: everything the emulated
# threads run, built per variant, so that a sanitizer sees every access they make.
KERNEL_SOURCE = "csrc/cuda_emu/emu_kernels.cpp"
SANITIZERS = ("address,undefined", "thread")
RUNTIME = {"address,undefined": "libasan.so", "thread": "libtsan.so"}


def _compiler():
    return os.environ.get("CXX", "c++")


def runtime_library(sanitize, cxx=None):
    """What to put in LD_PRELOAD for a build with `sanitize`: the sanitizer's
    runtime, and libstdc++ after it. Python does not link libstdc++, so without it
    ASan finds no __cxa_throw to wrap when it starts and aborts at the first C++
    exception (a pybind11 ValueError, a TORCH_CHECK)."""
    libs = []
    for name in (RUNTIME[sanitize], "libstdc++.so.6"):
        out = subprocess.run([cxx or _compiler(), f"-print-file-name={name}"], check=True,
                             capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(out):
            raise SystemExit(f"the compiler does not ship {name} (got {out!r})")
        libs.append(os.path.normpath(out))
    return " ".join(libs)


def flags(sanitize):
    """(host flags, kernel flags, link flags) for a build with `sanitize` (None: plain)."""
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = cpp_extension.include_paths() + [sysconfig.get_paths()["include"], os.path.join(ROOT, "csrc")]
    common = ["-std=c++20", "-fPIC", "-fvisibility=hidden", "-DOTTT_CUDA_EMU", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
              "-DTORCH_API_INCLUDE_EXTENSION_H", f"-DTORCH_EXTENSION_NAME={NAME}",
              f'-DOTTT_TORCH_VERSION="{torch.__version__}"', "-Wall", "-Wno-unknown-pragmas", "-Wno-sign-compare",
              "-Wno-unused-function"]
    common += ["-isystem" + p for p in includes[:-1]] + ["-I" + includes[-1]]
    host = common + ["-O2", "-g"]
    if sanitize:
        # -O1 keeps the reports' stacks readable and the run fast enough; every
        # finding aborts (no recovery), so a test run cannot pass over one.
        kernels = common + ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}",
                            "-fno-sanitize-recover=all", f'-DOTTT_EMU_SANITIZE="{sanitize}"']
    else:
        kernels = common + ["-O2"]
    ldflags = ["-shared"] + [f"-L{p}" for p in cpp_extension.library_paths()]
    ldflags += [f"-Wl,-rpath,{p}" for p in cpp_extension.library_paths()]
    ldflags += ["-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]
    if sanitize:
        ldflags += [f"-fsanitize={sanitize}"]
    return host, kernels, ldflags


def _up_to_date(obj, cflags):
    """Whether obj was compiled with these flags and is newer than every file its
    compile read (the compiler's -MMD list): a kernel edit then recompiles one
    file, not the four host files that include torch."""
    try:
        with open(obj + ".flags") as f:
            if f.read() != " ".join(cflags):
                return False
        with open(obj + ".d") as f:
            deps = f.read().replace("\\\n", " ").split(":", 1)[1].split()
        built = os.path.getmtime(obj)
        return all(os.path.getmtime(d) <= built for d in deps)
    except (OSError, IndexError):
        return False


def build(sanitize=None, jobs=None, out_dir=None):
    """Compiles and links the extension; returns the path of the library in ottt_cuda/."""
    if sanitize is not None and sanitize not in SANITIZERS:
        raise SystemExit(f"--sanitize must be one of {SANITIZERS}, got {sanitize!r}")
    cxx = _compiler()
    host_flags, kernel_flags, ldflags = flags(sanitize)
    variant_dir = os.path.join(ROOT, "build", "cuda_emu", (sanitize or "plain").replace(",", "_"))
    host_dir = os.path.join(ROOT, "build", "cuda_emu", "host")
    os.makedirs(variant_dir, exist_ok=True)
    os.makedirs(host_dir, exist_ok=True)

    def compile_one(job):
        src, out_dir, cflags = job
        obj = os.path.join(out_dir, os.path.basename(src) + ".o")
        if _up_to_date(obj, cflags):
            return obj
        cmd = [cxx, *cflags, "-MMD", "-MF", obj + ".d", "-c", os.path.join(ROOT, src), "-o", obj]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"compiling {src} failed:\n{' '.join(cmd)}\n{done.stdout}{done.stderr}")
        if done.stderr.strip():
            print(done.stderr, file=sys.stderr)
        with open(obj + ".flags", "w") as f:
            f.write(" ".join(cflags))
        return obj

    jobs_list = [(KERNEL_SOURCE, variant_dir, kernel_flags)] + [(src, host_dir, host_flags) for src in HOST_SOURCES]
    with concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, jobs_list))
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    lib = os.path.join(variant_dir, NAME + suffix)
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
        print(f"run it with: LD_PRELOAD=\"{runtime_library(args.sanitize)}\" python ...")


if __name__ == "__main__":
    main()
