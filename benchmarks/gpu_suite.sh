#!/usr/bin/env bash
# Everything to run on a lent GPU machine, in one call (it has torch, triton,
# nvcc, pytest, ninja and no network): build the extension for that GPU, run the
# CUDA tests, run the kernel benchmark with the copy-bandwidth ceiling, and write
# all logs and results under $OUT (default ./gpu_out).
#
#   OUT=/some/dir bash benchmarks/gpu_suite.sh
#   bash benchmarks/gpu_suite.sh --dry-run     # on a CPU machine: checks the script, skips the CUDA steps
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
status=0

step() {  # step NAME CMD...: run, log to $OUT/NAME.log, remember failures, keep going
  local name=$1; shift
  echo "== $name: $*"
  if [ $DRY = 1 ]; then echo "(dry run: skipped)"; return 0; fi
  local t0=$(date +%s)
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$OUT/summary.txt"
  tail -n 5 "$OUT/$name.log"
  [ $rc = 0 ] || status=1
}

{
  echo "date: $(date -u)"; echo "host: $(uname -a)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

if [ $DRY = 0 ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: use --dry-run on a CPU machine"; exit 2
fi

# nvcc may be a wrapper script: CUDA_HOME is the toolkit folder it calls.
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
  real=$(grep -o '/[^ "]*/bin/nvcc' "$(command -v nvcc)" 2>/dev/null | head -n 1 || true)
  [ -n "$real" ] || real=$(readlink -f "$(command -v nvcc)")
  export CUDA_HOME=$(dirname "$(dirname "$real")")
fi
export MAX_JOBS=${MAX_JOBS:-16} OTTT_FORCE_CUDA=1

if [ $DRY = 1 ]; then  # what can be checked without a GPU: the scripts parse, the CUDA tests collect
  $PY benchmarks/kernels.py --help >/dev/null || status=1
  n=$($PY -m pytest -q --collect-only -m cuda tests -p no:cacheprovider 2>/dev/null | grep -c '::' || true)
  echo "dry run: $n CUDA tests collected"; [ "$n" -gt 0 ] || status=1
fi
step build $PY setup.py build_ext --inplace
step build_info $PY -c "import json, ottt_cuda; i = ottt_cuda.build_info(); print(json.dumps(i)); assert i['cuda_compiled']"
step cuda_tests $PY -m pytest -q -m cuda tests -p no:cacheprovider
step kernels_fp32 $PY benchmarks/kernels.py --device cuda --copy --out "$OUT/kernels_cuda"
step kernels_bf16 $PY benchmarks/kernels.py --device cuda --dtype bfloat16 --copy --out "$OUT/kernels_cuda_bf16"
[ -f benchmarks/memory_vs_bptt.py ] && step memory_vs_bptt $PY benchmarks/memory_vs_bptt.py --device cuda \
  --json "$OUT/memory_vs_bptt_cuda.json" --plot "$OUT/memory_vs_bptt_cuda.png"
echo "gpu_suite done, status $status; results in $OUT"
exit $status
