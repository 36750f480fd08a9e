"""Plants plausible one-line bugs in the CUDA kernels, one at a time, and checks
that the emulated-CUDA tests catch each: proof that the cuda_emu suite (and its
sanitizers) can see a kernel bug, not only that it passes.

For each mutation it edits the source in place, builds ottt_cuda._C_cuda_emu
with the sanitizer named (scripts/build_cuda_emu.py; only the kernels' file is
recompiled), runs `pytest -x -m cuda_emu tests` under that sanitizer, and
restores the source whatever happens. A mutation is caught when that run fails;
the script prints which test failed and how (an assertion, AddressSanitizer,
UndefinedBehaviorSanitizer, ThreadSanitizer or a launch error), and exits 1 if
any mutation went uncaught.

    .venv/bin/python scripts/cuda_emu_mutations.py            # all (~10 min on 2 cores)
    .venv/bin/python scripts/cuda_emu_mutations.py --only grid_stride vector_tail_overread

It leaves the last sanitized build in ottt_cuda/: rebuild the variant you want
afterwards (python scripts/build_cuda_emu.py).
"""
import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import build_cuda_emu  # noqa: E402

ASAN, TSAN = "address,undefined", "thread"


@dataclasses.dataclass
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    sanitize: str = ASAN


MUTATIONS = [
    Mutation("vector_tail_overread", "the vector loop rounds the pack count up, reading past the end",
             "csrc/cuda/kernel_utils.cuh", "const int64_t nvec = n / VEC;", "const int64_t nvec = (n + VEC - 1) / VEC;"),
    Mutation("scalar_tail_start", "the scalar tail starts at the pack count, not at the first element after the packs",
             "csrc/cuda/kernel_utils.cuh", "for (int64_t i = nvec * VEC + tid; i < n; i += stride)",
             "for (int64_t i = nvec + tid; i < n; i += stride)"),
    Mutation("grid_stride", "the grid-stride loop strides by one block instead of the whole grid",
             "csrc/cuda/kernel_utils.cuh", "return static_cast<int64_t>(gridDim.x) * blockDim.x; }",
             "return static_cast<int64_t>(blockDim.x); }", TSAN),
    Mutation("alignment_test", "the 16-byte alignment test checks 8 bytes",
             "csrc/cuda/kernel_utils.cuh", "& 15u) == 0;", "& 7u) == 0;"),
    Mutation("outer_row_guard", "the outer kernel's store ignores the last row group's row count",
             "csrc/cuda/outer_accumulate_kernels.cu",
             "        if (r < rows) {\n          acc_t* p", "        if (r < kRows) {\n          acc_t* p"),
    Mutation("outer_column_guard", "the outer kernel's column loop runs one column past the row",
             "csrc/cuda/outer_accumulate_kernels.cu", "j < in;\n", "j <= in;\n"),
    Mutation("half_accumulator", "the outer kernel sums in the input's storage type (half/bfloat16), not in float",
             "csrc/cuda/outer_accumulate_kernels.cu", "      op_t sum[kRows];", "      in_t sum[kRows];"),
    Mutation("multistep_time_index", "the multi-step forward indexes [n, T] instead of [T, n]",
             "csrc/cuda/lif_multistep_kernels.cu", "      const int64_t k = t * n + i;\n      const op_t h",
             "      const int64_t k = i * p.steps + t;\n      const op_t h"),
    Mutation("multistep_backward_last_step", "the reverse-time loop stops before step 0",
             "csrc/cuda/lif_multistep_kernels.cu", "for (int64_t t = p.steps - 1; t >= 0; --t)",
             "for (int64_t t = p.steps - 1; t > 0; --t)"),
    Mutation("block_over_limit", "the multi-step kernels' block size exceeds 1024 threads",
             "csrc/cuda/lif_multistep_kernels.cu", "constexpr int kSeqThreads = 128;", "constexpr int kSeqThreads = 2048;"),
]

HOW = [
    (r"ERROR: AddressSanitizer: ([\w-]+)", "AddressSanitizer: {}"),
    (r"runtime error: ([^\n]{0,90})", "UndefinedBehaviorSanitizer: {}"),
    (r"WARNING: ThreadSanitizer: ([\w ]+?) \(", "ThreadSanitizer: {}"),
    (r"(launch of \S+: [^\n]{0,80})", "launch error: {}"),
]


def _env(sanitize):
    env = dict(os.environ, LD_PRELOAD=build_cuda_emu.runtime_library(sanitize), TRITON_INTERPRET="1")
    if sanitize == ASAN:
        env.update(ASAN_OPTIONS="detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    else:
        # torch's own OpenMP threads are uninstrumented: one intra-op thread keeps
        # TSan's reports to the emulator's threads.
        env.update(TSAN_OPTIONS="halt_on_error=1:abort_on_error=1:report_signal_unsafe=0",
                   OTTT_CUDA_EMU_HOST_THREADS="2", OMP_NUM_THREADS="1")
    return env


def _verdict(rc, out):
    if rc == 0:
        return None
    tests = re.findall(r"(tests/[\w/]+\.py::\S+)", out)
    failed = re.findall(r"^FAILED (\S+)", out, flags=re.M)
    test = failed[0] if failed else (tests[-1] if tests else "?")
    for pattern, label in HOW:
        m = re.search(pattern, out)
        if m:
            return test, label.format(m.group(1).strip())
    m = re.search(r"^E\s+(\S[^\n]{0,100})", out, flags=re.M)
    return test, "assertion: " + (m.group(1) if m else f"exit status {rc}")


def run(mutation, log_dir):
    path = os.path.join(ROOT, mutation.path)
    with open(path) as f:
        original = f.read()
    if original.count(mutation.old) != 1:
        raise SystemExit(f"{mutation.name}: the line to mutate is not found exactly once in {mutation.path}")
    t0 = time.time()
    try:
        with open(path, "w") as f:
            f.write(original.replace(mutation.old, mutation.new))
        try:
            build_cuda_emu.build(mutation.sanitize)
        except SystemExit as exc:  # the mutation does not compile: caught by the compiler
            return ("(build)", "compile error: " + str(exc).splitlines()[-1][:100]), time.time() - t0
        cmd = [sys.executable, "-m", "pytest", "-x", "-v", "-s", "-p", "no:cacheprovider", "-m", "cuda_emu", "tests"]
        done = subprocess.run(cmd, cwd=ROOT, env=_env(mutation.sanitize), capture_output=True, text=True)
        out = done.stdout + done.stderr
        with open(os.path.join(log_dir, mutation.name + ".log"), "w") as f:
            f.write(out)
        return _verdict(done.returncode, out), time.time() - t0
    finally:
        with open(path, "w") as f:
            f.write(original)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=[m.name for m in MUTATIONS], help="run these mutations only")
    p.add_argument("--logs", default=os.path.join(ROOT, "build", "cuda_emu", "mutations"),
                   help="where each mutation's pytest output is written")
    args = p.parse_args(argv)
    os.makedirs(args.logs, exist_ok=True)
    missed = []
    for m in MUTATIONS:
        if args.only and m.name not in args.only:
            continue
        verdict, seconds = run(m, args.logs)
        sanitizer = "ASan+UBSan" if m.sanitize == ASAN else "TSan, 2 host threads"
        if verdict is None:
            missed.append(m.name)
            print(f"MISSED  {m.name} ({m.what}; {sanitizer}; {seconds:.0f} s)", flush=True)
        else:
            print(f"caught  {m.name} ({m.what}; {sanitizer}; {seconds:.0f} s)\n"
                  f"        by {verdict[0]}: {verdict[1]}", flush=True)
    if missed:
        print("uncaught mutations: " + ", ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
