"""Every Triton kernel launch the package makes compiles for an H200 (sm_90), checked without a GPU.

Without a GPU the Triton tests run the kernels through Triton's interpreter, which never compiles
them. tests/_triton_sm90.py specializes every kernel as a CUDA call would (the backend's own launch
functions, launches recorded instead of made) and compiles each specialization ahead of time for
sm_90 with the installed triton (its own ptxas, no device); here its report is checked. In CI's
second leg this is triton 3.6.0, the GPU machine's version.
"""
import json
import os
import subprocess
import sys

import pytest

import ottt_cuda
from ottt_cuda import _backend

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(not _backend.triton_available() or os.environ.get("OTTT_TEST_NO_TRITON"),
                                reason="needs the triton package")

KERNELS = {"_lif_step_fwd_kernel", "_lif_step_bwd_kernel", "_lif_multistep_fwd_kernel", "_lif_multistep_bwd_kernel",
           "_trace_kernel", "_outer_small_kernel", "_outer_gemm_kernel"}


def _run(interpret):
    # The subprocess imports the ottt_cuda this test imported (a source tree on sys.path, or an install).
    root = os.path.dirname(os.path.dirname(os.path.abspath(ottt_cuda.__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TRITON_INTERPRET=interpret, PYTHONPATH=path)
    return subprocess.run([sys.executable, os.path.join(HERE, "_triton_sm90.py")], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def report():
    r = _run("0")  # compiled kernels: the interpreter's do not compile
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_every_specialization_compiles_for_sm90(report):
    failed = [(e["kernel"], e["signature"], e["constexprs"], e.get("error")) for e in report["compiled"]
              if not e["ok"]]
    assert not failed, f"triton {report['triton']}: {len(failed)} of {len(report['compiled'])} did not compile; " \
                       f"first: {failed[0]}"
    assert all(e["cubin_bytes"] > 0 for e in report["compiled"])


def test_every_kernel_of_the_package_was_compiled(report):
    from ottt_cuda.triton import lif_multistep, lif_step, outer, trace
    defined = {name for mod in (lif_step, lif_multistep, trace, outer) for name in vars(mod)
               if name.startswith("_") and name.endswith("_kernel")}
    assert defined == KERNELS  # a new kernel must be added to the workload in _triton_sm90.py
    assert {e["kernel"] for e in report["compiled"]} == KERNELS


@pytest.mark.parametrize("kernel", ["_lif_step_fwd_kernel", "_lif_step_bwd_kernel", "_lif_multistep_fwd_kernel",
                                    "_lif_multistep_bwd_kernel", "_trace_kernel", "_outer_small_kernel"])
def test_every_dtype_and_branch(report, kernel):
    entries = [e for e in report["compiled"] if e["kernel"] == kernel]
    first_ptr = [next(t for t in e["signature"].values() if t.startswith("*")) for e in entries]
    assert {"*fp32", "*fp64", "*fp16", "*bf16"} <= set(first_ptr)
    # each boolean constexpr compiled both ways (for lif_multistep_bwd, the reset kept and detached)
    flags = {k for e in entries for k, v in e["constexprs"].items() if isinstance(v, bool)}
    for flag in flags:
        assert {e["constexprs"][flag] for e in entries} == {True, False}, flag
    if "SURROGATE" in entries[0]["constexprs"]:
        assert {e["constexprs"]["SURROGATE"] for e in entries} == {0, 1, 2, 3}


def test_the_gemm_kernel_takes_the_half_types_on_tensor_cores(report):
    entries = [e for e in report["compiled"] if e["kernel"] == "_outer_gemm_kernel"]
    pairs = {(e["signature"]["w_ptr"], e["signature"]["g_ptr"]) for e in entries}
    assert {("*fp32", "*fp32"), ("*fp16", "*fp16"), ("*bf16", "*bf16"), ("*fp32", "*fp16"),
            ("*fp32", "*bf16")} == pairs
    # compiled, bf16 goes to tl.dot as bf16 (the interpreter's fp32 widening is off) and fp32 without TF32
    assert all(e["constexprs"]["UPCAST"] is False for e in entries)
    assert {e["constexprs"]["DOT_PRECISION"] for e in entries if e["signature"]["g_ptr"] == "*fp32"} == {"ieee"}


def test_it_runs_only_without_the_interpreter():
    r = _run("1")
    assert r.returncode != 0 and "TRITON_INTERPRET" in r.stderr
