#!/bin/bash
# The paper's Table 2 protocol: R400 on Fashion-MNIST, 3 seeds x {ottt_a, ottt_o, bptt},
# 100 epochs each, with the default `fmnist` recipe, several runs at once; then the report
# (benchmarks/fmnist_table2.py). Runs continue from their checkpoint when started again (--resume
# is exact), so the protocol can be stopped (Ctrl-C, a time limit, --extra "--stop-after N") and picked
# up later with the same options.
#
#   bash benchmarks/fmnist_table2_runs.sh [--out DIR] [--jobs N] [--device cpu|cuda] [--seeds "0 1 2"]
#                                        [--modes "ottt_a ottt_o bptt"] [--epochs 100] [--deadline-s S]
#
# --jobs N: runs at the same time (CPU: one per core, each with --threads 1; one GPU: 4-9 fit).
# --deadline-s S: stop every run S seconds after the start (they keep their last full epoch).
# --extra "ARGS": more options for every run (e.g. "--data-dir D", or "--limit-batches 2" for a smoke test).
# Report: $OUT/table2.{md,json,png}. The interpreter is $PYTHON (default python3: the active venv's).
set -u
OUT=runs/table2; JOBS=2; DEVICE=cpu; SEEDS="0 1 2"; MODES="ottt_a ottt_o bptt"; EPOCHS=100; DEADLINE=0; EXTRA=""
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --deadline-s) DEADLINE=$2; shift 2 ;;
    --extra) EXTRA=$2; shift 2 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "fmnist_table2_runs.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$JOBS" in ''|*[!0-9]*|0) echo "--jobs must be a positive integer, got $JOBS" >&2; exit 2 ;; esac
mkdir -p "$OUT"
start=$(date +%s)

one_run() {  # mode seed
  local dir="$OUT/$1_s$2" resume=()
  [ -f "$dir/checkpoint.pt" ] && resume=(--resume "$dir/checkpoint.pt")
  local limit=()
  if [ "$DEADLINE" -gt 0 ]; then
    local left=$(( DEADLINE - ($(date +%s) - start) ))
    [ "$left" -le 0 ] && return 0
    limit=(timeout -s INT -k 30 "$left")
  fi
  mkdir -p "$dir"
  "${limit[@]}" "$PY" -m ottt_cuda.train fmnist --mode "$1" --seed "$2" --epochs "$EPOCHS" --device "$DEVICE" \
    --threads 1 --out-dir "$dir" --no-progress "${resume[@]}" $EXTRA >>"$dir/stdout.txt" 2>>"$dir/stderr.txt"
  local rc=$?
  echo "$(date +%T) $1 seed $2 exit $rc" >>"$OUT/log.txt"
}

for mode in $MODES; do
  for seed in $SEEDS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 2; done
    one_run "$mode" "$seed" &
  done
done
wait

args=()
for mode in $MODES; do
  for seed in $SEEDS; do
    [ -s "$OUT/${mode}_s$seed/metrics.csv" ] && args+=(--run "recipe:$mode:$seed=$OUT/${mode}_s$seed")
  done
done
[ ${#args[@]} -eq 0 ] && { echo "no run has finished an epoch yet" >&2; exit 1; }
"$PY" benchmarks/fmnist_table2.py "${args[@]}" --epochs-target "$EPOCHS" --json "$OUT/table2.json" --md "$OUT/table2.md" \
  --plot "$OUT/table2.png" --note "device $DEVICE, $JOBS runs at once; $(uptime | sed 's/.*load/load/')" \
  --command "bash benchmarks/fmnist_table2_runs.sh --out $OUT --jobs $JOBS --device $DEVICE --seeds '$SEEDS' --modes '$MODES' --epochs $EPOCHS" \
  >/dev/null && echo "report: $OUT/table2.md"
