#!/usr/bin/env bash
# Creates ./.venv (if missing), installs torch and the test/benchmark tools, and
# builds ottt_cuda in place (editable). Safe to run again: it only redoes what
# changed. The CUDA kernels are built when nvcc is found (see setup.py);
# without a GPU, TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0" here.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${OTTT_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# torch 2.14.1 is the CUDA 13 build on this platform; it imports and runs on the CPU.
python -c "import torch" 2>/dev/null || pip install -q "torch==${OTTT_TORCH_VERSION:-2.14.1}"
# torchvision for the CIFAR/ImageNet loaders; the version that matches torch 2.14.1.
python -c "import torchvision" 2>/dev/null || pip install -q "torchvision==${OTTT_TORCHVISION_VERSION:-0.29.1}"
pip install -q ninja pytest hypothesis numpy expecttest matplotlib tqdm nir nirtorch
# The peers the tests and benchmarks compare against (SpikingJelly's OTTT, snnTorch's Leaky).
pip install -q spikingjelly snntorch

# nvcc may be a wrapper script: CUDA_HOME is the toolkit folder it calls.
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  real=$(grep -o '/[^ "]*/bin/nvcc' "$(command -v nvcc)" 2>/dev/null | head -n 1 || true)
  [ -n "$real" ] || real=$(readlink -f "$(command -v nvcc)")
  export CUDA_HOME=$(dirname "$(dirname "$real")")
fi
if [ -n "${CUDA_HOME:-}" ]; then
  export PATH="$CUDA_HOME/bin:$PATH"
  python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null ||
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

# Rebuild only when the sources, the build settings or torch changed: pip's
# editable build compiles in a fresh temporary folder every time.
stamp=$( (cat setup.py; find csrc -type f | sort | xargs cat; python -c "import torch; print(torch.__version__)";
          env | grep -E '^(OTTT_CPU_ONLY|OTTT_FORCE_CUDA|TORCH_CUDA_ARCH_LIST|CUDA_HOME)=' | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.ottt_build_stamp" 2>/dev/null)" = "$stamp" ] && python -c "import ottt_cuda._C" 2>/dev/null; then
  echo "ottt_cuda build: up to date"
else
  start=$(date +%s)
  pip install -q --no-build-isolation -e .
  echo "$stamp" >"$VENV/.ottt_build_stamp"
  echo "ottt_cuda build: $(( $(date +%s) - start )) s"
fi
python -c "import json, ottt_cuda; print(json.dumps(ottt_cuda.build_info()))"
