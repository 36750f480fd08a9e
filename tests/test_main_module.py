"""python -m ottt_cuda: build information and the backend of each visible device,
as text for a bug report or as JSON; a bad OTTT_BACKEND is shown, not a traceback."""
import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, **env):
    proc = subprocess.run([sys.executable, "-m", "ottt_cuda", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_json_lists_every_visible_device_with_its_backend():
    r = json.loads(_run("--json", OTTT_BACKEND=""))
    assert [d["device"] for d in r["devices"]] == ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    cpu = r["devices"][0]
    # the compiled CPU kernels when they were built, else the PyTorch reference (Triton needs a GPU here)
    assert cpu["backend"] == ("cpu" if r["build_info"]["cpu_compiled"] else "torch")
    assert {"version", "torch_runtime_version", "extension_loaded", "cpu_compiled", "cuda_compiled"} <= set(
        r["build_info"])


def test_forced_and_disabled_backends_are_reported():
    assert json.loads(_run("--json", OTTT_BACKEND="torch"))["devices"][0]["backend"] == "torch"
    r = json.loads(_run("--json", OTTT_DISABLE_EXTENSION="1", OTTT_BACKEND=""))
    assert r["build_info"]["extension_loaded"] is False and r["devices"][0]["backend"] == "torch"


def test_bad_backend_variable_is_shown_in_the_report():
    r = json.loads(_run("--json", OTTT_BACKEND="nope"))
    assert r["devices"][0]["backend"].startswith("error:") and "nope" in r["devices"][0]["backend"]


def test_text_report_names_build_and_backends():
    out = _run(OTTT_BACKEND="torch")
    assert out.startswith("ottt_cuda 0.1.0")
    assert "build_info:\n  version: 0.1.0" in out
    assert "backends:\n  cpu (" in out and "): torch" in out
