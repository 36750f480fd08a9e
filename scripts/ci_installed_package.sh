#!/usr/bin/env bash
# CI: ottt_cuda as a user installs it. A non-editable `pip install --no-build-isolation .`
# of a copy of the tree into a fresh virtual environment, then, from a folder outside
# the checkout: import it (from the install, not the checkout), one op on each backend
# that runs here (the compiled CPU kernels, Triton through its interpreter, the
# PyTorch reference) against values worked out by hand, and the quick benchmark with
# --iters 1.
#
# Fast on purpose: the fresh environment reuses the packages of .venv (torch is
# 5.5 GB) through a folder of links that leaves out the checkout's editable
# ottt_cuda, and the extension is built without the CUDA kernels (OTTT_CPU_ONLY=1:
# the main CI leg already proves they compile). Needs .venv from scripts/setup.sh.
#   bash scripts/ci_installed_package.sh          # MAX_JOBS=1 on a busy machine
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
[ -x .venv/bin/python ] || { echo "no .venv: run scripts/setup.sh first"; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ottt_installed.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

echo "== copy of the tree (tracked and new files, no build outputs) in $WORK/src"
mkdir -p "$WORK/src"
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$WORK/src" 2>/dev/null || true
[ -f "$WORK/src/setup.py" ] || { echo "copy failed"; exit 1; }

echo "== fresh venv on .venv's packages, without the checkout's ottt_cuda"
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$WORK/deps"
for p in "$SITE"/*; do
  case "$(basename "$p")" in
    ottt_cuda*|__editable__*ottt_cuda*|*.pth) ;;  # the editable install and its hooks stay out
    *) ln -s "$p" "$WORK/deps/" ;;
  esac
done
.venv/bin/python -m venv --without-pip "$WORK/venv"
NEWSITE=$("$WORK/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$WORK/deps" >"$NEWSITE/ottt_deps.pth"
PY="$WORK/venv/bin/python"
"$PY" -c "import torch, tqdm, pip; print('torch', torch.__version__)"

# Without --no-deps: install_requires (torch, tqdm) must be satisfied by what is there.
echo "== pip install --no-build-isolation . (CPU kernels only, MAX_JOBS=${MAX_JOBS:=$(nproc)})"
b=$(date +%s)
(cd "$WORK/src" && OTTT_CPU_ONLY=1 MAX_JOBS=$MAX_JOBS "$PY" -m pip install -q --no-build-isolation .)
echo "build + install: $(( $(date +%s) - b )) s"

echo "== from outside the checkout: import, one op per backend"
mkdir -p "$WORK/elsewhere" && cd "$WORK/elsewhere"
TRITON_INTERPRET=1 "$PY" - "$ROOT" "$NEWSITE" <<'PY'
import os, sys
root, site = sys.argv[1], sys.argv[2]
import torch
import ottt_cuda
from ottt_cuda import _backend, ops

assert ottt_cuda.__file__.startswith(site), f"ottt_cuda imported from {ottt_cuda.__file__}, not the install"
from_checkout = [m.__name__ for m in list(sys.modules.values())
                 if (getattr(m, "__file__", None) or "").startswith(root + os.sep)]
assert not from_checkout, f"modules loaded from the checkout: {from_checkout}"
info = ottt_cuda.build_info()
print("build_info:", info)
assert info["extension_loaded"] and info["cpu_compiled"], "the installed extension did not load"

# h = x (v = 0); 0.5 stays below v_th = 1, 1.5 fires and soft-resets to 0.5; the trace is 0.5 * 1 + s
ran = []
for backend in ottt_cuda.BACKENDS:
    if not _backend.runs_on(backend, "cpu"):
        continue
    ottt_cuda.set_backend(backend)
    s, v, tr = ops.lif_step(torch.tensor([0.5, 1.5]), torch.zeros(2), trace=torch.ones(2), trace_decay=0.5)
    assert s.tolist() == [0.0, 1.0] and v.tolist() == [0.5, 0.5] and tr.tolist() == [0.5, 1.5], (backend, s, v, tr)
    ran.append(backend)
ottt_cuda.set_backend(None)
assert "cpu" in ran, ran
print("one lif_step per backend, values as worked out by hand:", ran)
PY

echo "== python -m ottt_cuda (the bug-report view)"
"$PY" -m ottt_cuda

echo "== the quick benchmark, --iters 1"
"$PY" -m ottt_cuda.bench --iters 1 --json quick.json
"$PY" - <<'PY'
import json
recs = json.load(open("quick.json"))
bad = [r for r in recs if r.get("error")]
assert recs and not bad, bad
assert open("ottt_bench_quick_cpu.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
print(len(recs), "configurations measured, PNG written")
PY
echo "installed-package check: $(( $(date +%s) - start )) s"
