#!/usr/bin/env bash
# Everything to run on a lent GPU machine, in one call that fits a short window
# (one H200, 16 cores, torch/triton/nvcc/pytest, no network): build for that GPU,
# prove every CUDA and Triton kernel, measure bandwidth and memory vs BPTT.
#
#   OUT=/some/dir bash benchmarks/gpu_suite.sh        # on the GPU machine (device tool: OUT is $OUT)
#   bash benchmarks/gpu_suite.sh --dry-run             # on a CPU machine: checks everything it can
#
# Results: $OUT/gpu_results.tgz (every log and result file, re-packed after each
# step, so a killed run still returns what it finished) and $OUT/summary.txt
# (one line per step: name, rc, seconds, key figure). Nothing else is left in $OUT.
# Wheels for the peers (SpikingJelly) and pytest plugins come from .whl/ when it
# exists (make it with benchmarks/gpu_wheels.sh; the device tool needs carry [".whl"]).
#
# Knobs: PYTHON (default python3), GPU_SUITE_BUDGET_S (overall deadline, default 350),
# MAX_JOBS (default: all cores), GPU_SUITE_WORK (work folder, default a new temp dir).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
BUDGET=${GPU_SUITE_BUDGET_S:-350}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
WORK=${GPU_SUITE_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite.XXXXXX")}
LOGS=$WORK/logs RES=$WORK/results SITE=$WORK/site
mkdir -p "$LOGS" "$RES" "$SITE"
SUMMARY=$OUT/summary.txt
export PYTHONUNBUFFERED=1 OTTT_FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PYTHONPATH="$SITE:$ROOT/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export ROOT PY LOGS RES SITE DRY
: >"$SUMMARY"
failed=0

pack() {  # everything so far, in one archive (written aside, then renamed: never half a file)
  cp "$SUMMARY" "$WORK/summary.txt"
  tar -czf "$OUT/.gpu_results.tgz.part" -C "$WORK" logs results summary.txt 2>/dev/null &&
    mv -f "$OUT/.gpu_results.tgz.part" "$OUT/gpu_results.tgz"
}

key_of() {  # the figure a reader wants first: a "KEY:" line, else pytest's tally, else the last line
  local log=$1 k t
  k=$(grep -E '^KEY: ' "$log" | tail -n 1 | cut -c6-)
  t=$(grep -E '[0-9]+ (passed|failed|errors?|skipped)' "$log" | tail -n 1 | tr -d '=' | sed 's/^ *//')
  if [ -n "$k$t" ]; then echo "$k${k:+${t:+; }}$t"; else tail -n 1 "$log"; fi | cut -c1-200
}

record() { printf '%-16s rc=%-4s %4ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$SUMMARY"; }

# step NAME MAX_S NEED_S 'COMMAND': run COMMAND (bash) with a timeout of MAX_S, cut
# to the time left before the deadline; skipped when under NEED_S seconds are left
# (low-priority steps ask for more). Adding a step is one line below.
step() {
  local name=$1 max=$2 need=$3 cmd=$4 left lim t0 rc
  if [ $DRY = 1 ]; then echo "== $name (timeout ${max}s, needs ${need}s): $cmd"; return 0; fi
  left=$((DEADLINE - $(date +%s)))
  if [ $left -lt "$need" ]; then record "$name" skip 0 "deadline near: ${left}s left, needs ${need}s"; pack; return 0; fi
  lim=$((max < left ? max : left))
  echo "== $name (timeout ${lim}s): $cmd"
  t0=$(date +%s)
  timeout -k 10 "$lim" bash -c "$cmd" >"$LOGS/$name.log" 2>&1
  rc=$?
  [ $rc = 124 ] && echo "TIMED OUT after ${lim}s" >>"$LOGS/$name.log"
  [ $rc = 0 ] || failed=1
  record "$name" $rc $(($(date +%s) - t0)) "$(key_of "$LOGS/$name.log")"
  tail -n 3 "$LOGS/$name.log"
  pack
}

versions() {
  echo "date: $(date -u)"; uname -a; nproc
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1 || echo "no nvidia-smi"
  nvcc --version 2>&1 | tail -n 2; gcc --version 2>&1 | head -n 1
  compute-sanitizer --version 2>&1 | head -n 2
  "$PY" - <<'PY'
import importlib.util, sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
try:
    import triton; print("triton", triton.__version__)
except ImportError as e:
    print("triton: not importable:", e)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
for m in ("spikingjelly", "pytest_timeout", "xdist", "matplotlib", "ninja"):
    print(m, "yes" if importlib.util.find_spec(m) else "no")
PY
  echo "KEY: $("$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' 2>&1 | tail -n 1)"
}

# pip --target from .whl/ without a network. A wheel pip refuses is unpacked by hand only when it is
# pure Python (*-none-any); a compiled one for another CPython (h5py's, made for the GPU machine's 3.12)
# is skipped, so that it cannot shadow a working copy of the same package (a dry run on another Python).
wheels() {
  [ -d "$ROOT/.whl" ] || { echo "KEY: no .whl folder: SpikingJelly peers skipped"; return 0; }
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$ROOT"/.whl/*.whl 2>/dev/null || {
    for w in "$ROOT"/.whl/*.whl; do
      "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$w" 2>/dev/null && continue
      case $w in
        *-none-any.whl) "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
                          "$w" "$SITE" || echo "skipped $w" ;;
        *) echo "skipped $w (built for another Python or platform)" ;;
      esac
    done
  }
  ls "$SITE"
  "$PY" -c "from spikingjelly.activation_based.model import spiking_vggws_ottt" &&
    echo "KEY: spikingjelly importable from $SITE" || echo "KEY: spikingjelly NOT importable: peers skipped"
}
export -f versions wheels

# pytest: short tracebacks, a cap on failures, a per-test timeout when
# pytest-timeout is there, 8 workers (parallel Triton compilation) when xdist is.
pytest_cmd() {
  local args="-q --tb=short --maxfail=25 -p no:cacheprovider -o addopts="
  "$PY" -c "import pytest_timeout" 2>/dev/null && args+=" -p pytest_timeout --timeout=${1:-120}"
  [ "${2:-}" = par ] && "$PY" -c "import xdist" 2>/dev/null && args+=" -p xdist -n 8"
  echo "$PY -m pytest $args"
}

ARCH=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(0); print(f'{c[0]}.{c[1]}')" 2>/dev/null || echo 9.0)
SJ_METHODS=""
step versions 30 0 versions
step wheels 40 0 wheels
[ $DRY = 1 ] && wheels >"$LOGS/wheels.log" 2>&1  # harmless here, and it shows the plugins in the commands below
"$PY" -c "import spikingjelly" 2>/dev/null && SJ_METHODS="sj_ottt sj_bptt"

if [ $DRY = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: use --dry-run on a CPU machine"; pack; exit 2
fi
# nvcc may be a wrapper script: CUDA_HOME is the toolkit folder it calls.
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
  real=$(grep -o '/[^ "]*/bin/nvcc' "$(command -v nvcc)" 2>/dev/null | head -n 1 || true)
  [ -n "$real" ] || real=$(readlink -f "$(command -v nvcc)")
  export CUDA_HOME=$(dirname "$(dirname "$real")")
fi

# Most important first. Columns: name, timeout (s), seconds that must be left to start, command.
M="--device cuda --model vgg11_ws --batch 128 --T 1 6 16 32 --iters 2 --timeout 45"
step build        200   0 "TORCH_CUDA_ARCH_LIST=$ARCH $PY setup.py build_ext --inplace"
step build_info    30   0 "$PY -c \"import json, ottt_cuda; i = ottt_cuda.build_info(); print(json.dumps(i)); assert i['cuda_compiled']; print('KEY: cuda_compiled', i.get('cuda_archs', '$ARCH'))\""
step smoke         60  20 "$PY benchmarks/gpu_ops_check.py --numel 67108864 --backends cuda triton"
step op_tests     150  40 "$(pytest_cmd 120 par) -m cuda tests --ignore=tests/test_nn_cuda.py"
step nn_cuda       60  20 "OTTT_CUDA_BACKEND=cuda $(pytest_cmd 60) -p pytest_cuda_backend tests/test_nn_cuda.py"
step nn_triton     60  20 "OTTT_CUDA_BACKEND=triton $(pytest_cmd 60) -p pytest_cuda_backend tests/test_nn_cuda.py"
step kernels_fp32  60  30 "$PY benchmarks/kernels.py --device cuda --copy --numel 67108864 --batches 1 8 128 --out $RES/kernels_cuda"
step memory       150  60 "$PY -m ottt_cuda.bench $M --methods ottt_a bptt ${SJ_METHODS%% *} ottt_o sltt ${SJ_METHODS#* } --json $RES/main_job_cuda.json --plot $RES/main_job_cuda.png"
step sanitizer     90  45 "compute-sanitizer --tool memcheck --error-exitcode 9 $PY benchmarks/gpu_ops_check.py --numel 4099 --backends cuda triton"
step kernels_bf16  60  45 "$PY benchmarks/kernels.py --device cuda --copy --dtype bfloat16 --numel 67108864 --batches 1 8 --out $RES/kernels_cuda_bf16"
# Other issues' GPU checks, least important last (skipped when the deadline is near).
step graph_batch1  90  30 "$PY benchmarks/graph_batch1.py --json $RES/graph_batch1_cuda.json --md $RES/graph_batch1_cuda.md"
step imagenet_step 120  60 "$PY benchmarks/imagenet_step.py --device cuda --json $RES/imagenet_step_cuda.json"
step quick_bench   90  45 "$PY -m ottt_cuda.bench --device cuda --json $RES/quick_bench_cuda.json --plot $RES/quick_bench_cuda.png"

if [ $DRY = 1 ]; then  # what can be checked without a GPU
  for s in benchmarks/gpu_ops_check.py benchmarks/kernels.py benchmarks/imagenet_step.py benchmarks/graph_batch1.py \
      "-m ottt_cuda.bench"; do
    $PY $s --help >/dev/null 2>&1 && echo "dry run: $s --help parses" || { echo "dry run: $s --help FAILED"; failed=1; }
  done
  n=$($PY -m pytest -q --collect-only -m cuda tests -p no:cacheprovider 2>/dev/null | grep -c '::' || true)
  echo "dry run: $n CUDA tests collected"; [ "$n" -gt 0 ] || failed=1
  OTTT_CUDA_BACKEND=triton $PY -m pytest -q --collect-only -p pytest_cuda_backend tests/test_nn_cuda.py \
    -p no:cacheprovider >/dev/null 2>&1 && echo "dry run: pytest_cuda_backend plugin loads" ||
    { echo "dry run: pytest_cuda_backend plugin FAILED"; failed=1; }
  echo "dry run: wheels: $(key_of "$LOGS/wheels.log")"
  echo "dry run: peers: ${SJ_METHODS:-none}; pytest: $(pytest_cmd 120 par)"
  pack; tar -tzf "$OUT/gpu_results.tgz" >/dev/null && echo "dry run: $OUT/gpu_results.tgz packs"
fi
echo "gpu_suite done in $(($(date +%s) - START)) s, failed=$failed; results: $OUT/gpu_results.tgz, $SUMMARY"
exit $failed
