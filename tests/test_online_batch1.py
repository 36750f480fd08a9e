"""benchmarks/online_batch1.py --quick in a subprocess: the JSON has the documented
structure and the correctness check against SpikingJelly's OTTT passed. No timing
is asserted (only that the numbers are positive and consistent with each other)."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "online_batch1.py")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("online_batch1")
    paths = {k: str(out / f"r.{k}") for k in ("json", "md")}
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", paths["json"], "--md", paths["md"]],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(paths["json"]) as f:
        payload = json.load(f)
    with open(paths["md"]) as f:
        md = f.read()
    return payload, md


def test_help_names_the_options():
    proc = subprocess.run([sys.executable, SCRIPT, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for opt in ("--quick", "--json", "--plot", "--threads", "--rounds"):
        assert opt in proc.stdout


def test_bad_threads_are_refused_by_name():
    proc = subprocess.run([sys.executable, SCRIPT, "--threads", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "--threads" in proc.stderr


def test_quick_json_structure(quick):
    payload, _ = quick
    assert {"meta", "checks", "correct", "results", "baseline_vs_targets"} <= set(payload)
    meta = payload["meta"]
    for key in ("command", "machine", "threads", "rounds", "outside_kernel_share_definition"):
        assert key in meta
    assert "--quick" in meta["command"]
    assert meta["machine"]["torch"] and meta["machine"]["torch_threads"] >= 1
    # --quick: mlp784 (ours and, with SpikingJelly, its OTTT) and r400, batch 1, one thread
    cases = {(r["model"], r["method"]) for r in payload["results"]}
    assert {("mlp784", "ottt_a"), ("mlp784", "ottt_o"), ("r400", "ottt_a"), ("r400", "ottt_o")} <= cases
    for r in payload["results"]:
        assert r["batch"] == 1 and r["threads"] == 1 and r["T"] == 5
        assert r["samples_per_s"] > 0 and 0.0 <= r["outside_kernel_share"] <= 1.0
        assert len(r["s_per_call_rounds"]) == meta["rounds"]
        # the reported numbers are two views of the same median
        assert math.isclose(r["samples_per_s"], r["batch"] / r["s_per_call"], rel_tol=1e-9)
        assert math.isclose(r["ms_per_time_step"], r["s_per_call"] / r["T"] * 1e3, rel_tol=1e-9)


@pytest.mark.skipif(importlib.util.find_spec("spikingjelly") is None, reason="SpikingJelly is the peer checked")
def test_quick_correctness_check_passed(quick):
    payload, md = quick
    checks = [c for c in payload["checks"] if c["model"] == "mlp784"]
    assert checks, "the 784-400-10 net must be checked against SpikingJelly's OTTT before timing"
    for c in checks:
        assert c["passed"] is True
        assert c["max_rel_output_diff"] <= c["tolerance_output"] and c["max_rel_grad_diff"] <= c["tolerance_grad"]
    assert payload["correct"] is True
    peer = [r for r in payload["results"] if r["method"] == "sj_ottt"]
    assert peer and all(r["ratio_vs_sj_ottt"] == 1.0 for r in peer)
    assert "| mlp784 | 1 | 1 | sj_ottt |" in md
