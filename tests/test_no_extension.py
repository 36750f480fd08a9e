"""Without the compiled extension (not built, a failed build, or hidden with
OTTT_DISABLE_EXTENSION=1) ottt_cuda imports, says plainly why in one warning,
runs on the PyTorch/Triton backends, and the test suite still collects."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import ottt_cuda
import torch
from ottt_cuda import ops
# h = x (v = 0): 0.5 stays below v_th = 1, 1.5 fires and soft-resets to 0.5
s, v = ops.lif_step(torch.tensor([0.5, 1.5]), torch.zeros(2))
print(json.dumps({"warnings": [str(w.message) for w in caught if "ottt_cuda" in str(w.message)],
                  "info": ottt_cuda.build_info(), "backend": ottt_cuda.get_backend("cpu"),
                  "spike": s.tolist(), "v": v.tolist()}))
"""

# What a machine without the .so sees: the file cannot be found.
NOT_BUILT = r"""
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "ottt_cuda._C" else _find(name, *a)
""" + PROBE


def _run(code, **env):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_disabled_extension_warns_plainly_and_ops_fall_back():
    r = _run(PROBE, OTTT_DISABLE_EXTENSION="1")
    (message,) = r["warnings"]
    assert "compiled extension is disabled (OTTT_DISABLE_EXTENSION=1)" in message
    assert "Triton/PyTorch" in message
    assert r["info"]["extension_loaded"] is False and r["info"]["cpu_compiled"] is False
    assert "OTTT_DISABLE_EXTENSION" in r["info"]["extension_error"]
    assert r["backend"] == "torch"
    assert r["spike"] == [0.0, 1.0] and r["v"] == [0.5, 0.5]


def test_missing_extension_says_not_built_and_how_to_rebuild():
    r = _run(NOT_BUILT, OTTT_DISABLE_EXTENSION="")
    (message,) = r["warnings"]
    assert "the compiled extension is not built" in message
    assert "pip install --no-build-isolation" in message
    assert "circular" not in message and "partially initialized" not in message
    assert r["info"]["extension_loaded"] is False and r["backend"] == "torch"
    assert r["spike"] == [0.0, 1.0] and r["v"] == [0.5, 0.5]


def test_every_test_file_collects_without_the_extension():
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, OTTT_DISABLE_EXTENSION="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.lower().split("collected")[-1]
    assert "tests/test_opcheck_compile.py::test_opcheck[lif_step_fwd]" in proc.stdout
