#!/usr/bin/env bash
# CI leg 2: the GPU machine's versions (torch 2.11.0 + triton 3.6.0, a CUDA 13
# build like its nvcc 13.0). Builds the extension WITH the CUDA kernels in its
# own venv and its own copy of the tree (the main leg's in-place .so is never
# touched), then runs the test command there. Triton runs through its
# interpreter here, so triton 3.6's interpreter is what the Triton tests meet.
#
#   bash scripts/ci_torch211.sh          # from the repository root
#
# Knobs: OTTT_CI211_DIR (work folder, default build/ci211), MAX_JOBS,
# TORCH_CUDA_ARCH_LIST (default 9.0, the H200's), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${OTTT_CI211_DIR:-$ROOT/build/ci211}
VENV=$WORK/venv
SRC=$WORK/src
PY=${PYTHON:-python3}
start=$(date +%s)

# PyPI's torch 2.11.0 wheel for Linux x86_64 is the CUDA 13.0 build (torch.version.cuda
# "13.0", nvidia-*-cu13 runtime wheels): it matches nvcc 13.0, whose major version
# torch's extension builder requires to equal its own. torchvision 0.26.0 is the
# release paired with torch 2.11.
# Every install is constrained to these versions: otherwise a peer's dependency
# (spikingjelly needs torchaudio) pulls in a newer torch and replaces 2.11.0.
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
mkdir -p "$WORK"
printf '%s\n' torch==2.11.0 triton==3.6.0 torchvision==0.26.0 torchaudio==2.11.0 >"$WORK/constraints.txt"
"$VENV/bin/pip" install -q -c "$WORK/constraints.txt" torch triton torchvision \
  ninja pytest hypothesis numpy expecttest matplotlib tqdm nir nirtorch spikingjelly snntorch
"$VENV/bin/python" - <<'PY'
import torch, triton
print("leg 2:", "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)
assert torch.__version__.startswith("2.11.0") and triton.__version__ == "3.6.0", "leg 2: wrong torch/triton"
assert torch.version.cuda and torch.version.cuda.split(".")[0] == "13", "expected torch's CUDA 13 build (nvcc 13.0)"
PY
echo "venv: $(( $(date +%s) - start )) s"

# The copy: tracked files and untracked ones git does not ignore (so no .venv,
# no build folders, no in-place .so of the main leg).
rm -rf "$SRC" && mkdir -p "$SRC"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar -c --null -T - | tar -x -C "$SRC"

# nvcc may be a wrapper script: CUDA_HOME is the toolkit folder it calls.
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  real=$(grep -o '/[^ "]*/bin/nvcc' "$(command -v nvcc)" 2>/dev/null | head -n 1 || true)
  [ -n "$real" ] || real=$(readlink -f "$(command -v nvcc)")
  export CUDA_HOME=$(dirname "$(dirname "$real")")
fi
export OTTT_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)}
t0=$(date +%s)
(cd "$SRC" && "$VENV/bin/python" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1) ||
  { tail -n 40 "$WORK/build.log"; echo "leg 2: build failed"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
(cd "$SRC" && "$VENV/bin/python" - <<'PY'
import ottt_cuda
info = ottt_cuda.build_info()
print("build_info:", info)
assert info["cpu_compiled"] and info["cuda_compiled"], "leg 2: the CPU and CUDA kernels must both be built"
assert info["torch_version"].startswith("2.11.0"), info["torch_version"]
PY
)

# The test command of README.md, without its set-up part (this leg has its own).
t0=$(date +%s)
(cd "$SRC" && "$VENV/bin/python" -m pytest -q tests -p no:cacheprovider)
echo "tests: $(( $(date +%s) - t0 )) s; leg 2 total: $(( $(date +%s) - start )) s"
