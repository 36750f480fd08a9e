#!/usr/bin/env bash
# Prepares .whl/ (repository root, git-ignored): the wheels the GPU suite installs
# on a machine without a network. Run it where pip reaches PyPI, then give the
# folder to the GPU run (the device tool: carry [".whl"]).
#
#   bash benchmarks/gpu_wheels.sh            # download into .whl/
#
# SpikingJelly 2.0.0 is pure Python; importing its model package needs loguru,
# SciencePlots and h5py (h5py is compiled: the wheel is for the GPU machine's
# CPython, 3.12 by default, GPU_PYTHON_VERSION to change). The GPU machine
# already has torch and numpy. pytest-timeout and pytest-xdist (+ execnet) give
# the suite per-test timeouts and parallel Triton compilation.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PYV=${GPU_PYTHON_VERSION:-3.12}
mkdir -p "$DEST"
pip download -q --no-deps -d "$DEST" spikingjelly==2.0.0 loguru SciencePlots pytest-timeout pytest-xdist execnet
pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "$PYV" \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DEST" h5py
ls -l "$DEST"
