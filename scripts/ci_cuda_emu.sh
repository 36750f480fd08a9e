#!/usr/bin/env bash
# CI: the CUDA kernels' own source executed without a GPU. Builds
# ottt_cuda._C_cuda_emu (csrc/cuda/ compiled by the C++ compiler against the
# emulated launch of csrc/cuda_emu/) twice and runs the emulated op tests on it:
#   1. under -fsanitize=address,undefined: every test marked cuda_emu (the
#      backend-parametrized op tests on cpu-cuda_emu, tests/test_cuda_emu.py and
#      the large sizes of tests/test_gpu_scale.py). Stands in for
#      compute-sanitizer's memcheck: an out-of-bounds access or undefined
#      behaviour in a kernel or its launch code aborts the run;
#   2. under -fsanitize=thread, each launch's threads dealt over two host
#      threads: the same tests but the large sizes, where two emulated threads
#      that write the same element (a grid-stride or indexing bug) are reported
#      as a data race.
# Needs .venv from scripts/setup.sh.
#   bash scripts/ci_cuda_emu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

runtime() { python -c "import sys; sys.path.insert(0, 'scripts'); import build_cuda_emu as b; print(b.runtime_library('$1'))"; }

check_loaded() {  # the sanitized extension is the one the tests will load
  python - "$1" <<'PY'
import sys
from ottt_cuda import _cuda_emu
assert _cuda_emu.loaded(), f"the emulated CUDA extension did not load: {_cuda_emu.LOAD_ERROR}"
info = _cuda_emu.module().build_info()
assert info["sanitize"] == sys.argv[1], info
print("ottt_cuda._C_cuda_emu loaded, built with -fsanitize=" + info["sanitize"],
      "| host threads:", _cuda_emu.module().host_threads())
PY
}

# --capture=sys: pytest captures Python's output only, so that a sanitizer's
# report (written to file descriptor 2 just before it aborts) reaches the log.
echo "== emulated CUDA under AddressSanitizer + UndefinedBehaviorSanitizer"
start=$(date +%s)
python scripts/build_cuda_emu.py --sanitize address,undefined --jobs "$MAX_JOBS"
echo "build: $(( $(date +%s) - start )) s"
# detect_leaks=0: Python and torch keep allocations alive until exit by design.
# alloc_dealloc_mismatch=0: uninstrumented libraries may pair new[]/free across
# their own boundaries; the kernels allocate nothing.
export ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
LD_PRELOAD="$(runtime address,undefined)" check_loaded address,undefined
t0=$(date +%s)
LD_PRELOAD="$(runtime address,undefined)" python -m pytest -q -p no:cacheprovider --capture=sys -m cuda_emu tests
echo "tests under ASan+UBSan: $(( $(date +%s) - t0 )) s"
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== emulated CUDA under ThreadSanitizer, two host threads per launch"
start=$(date +%s)
python scripts/build_cuda_emu.py --sanitize thread --jobs "$MAX_JOBS"
echo "build: $(( $(date +%s) - start )) s"
# OMP_NUM_THREADS=1: torch's OpenMP threads are not instrumented, and TSan would
# report their hand-offs as races; the emulator's own threads are what is checked.
export OTTT_CUDA_EMU_HOST_THREADS=2 OMP_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:report_signal_unsafe=0
LD_PRELOAD="$(runtime thread)" check_loaded thread
t0=$(date +%s)
# Every emulated test but the large sizes of test_gpu_scale.py (already run under
# ASan above): a race needs two threads on one element, not a large tensor.
LD_PRELOAD="$(runtime thread)" python -m pytest -q -p no:cacheprovider --capture=sys -m cuda_emu tests --deselect tests/test_gpu_scale.py
echo "tests under TSan: $(( $(date +%s) - t0 )) s"
