#!/usr/bin/env bash
# CI: the package without its compiled extension, as on a machine where the build
# failed or no compiler exists. OTTT_DISABLE_EXTENSION=1 makes `import ottt_cuda`
# skip ottt_cuda._C (and say so in one warning); the whole test suite must then
# collect and pass on the Triton/PyTorch backends, the compiled-only tests skipped.
# The whole suite rather than a subset: the point is that no test file breaks
# without _C, and a subset would not see the file that does.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
start=$(date +%s)
OTTT_DISABLE_EXTENSION=1 python - <<'PY'
import ottt_cuda
info = ottt_cuda.build_info()
assert not info["extension_loaded"] and ottt_cuda.get_backend("cpu") == "torch", info
PY
OTTT_DISABLE_EXTENSION=1 python -m pytest -q -p no:cacheprovider -rs tests | grep -v "^SKIPPED.*needs a CUDA device"
echo "tests without the extension: $(( $(date +%s) - start )) s"
