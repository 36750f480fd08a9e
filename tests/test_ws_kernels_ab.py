"""benchmarks/ws_kernels_ab.py on a tiny configuration: both arms timed in every round, the
report's numbers are the medians of the rounds it records, the gradient gate ran, and a bad
case is refused. No timing is asserted."""
import json
import os
import statistics
import subprocess
import sys

import pytest

from ottt_cuda.nn import ws

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "ws_kernels_ab.py")


@pytest.mark.skipif(ws._WS_FORWARD_CPU is None, reason="compiled extension with the WS kernels not loaded")
def test_interleaved_rounds_and_medians(tmp_path):
    stem = tmp_path / "ab"
    proc = subprocess.run([sys.executable, SCRIPT, "--cases", "r400:ottt_a:1", "mlp784:ottt_o:2", "--rounds", "3",
                           "--calls", "1", "--out", str(stem)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(stem.with_suffix(".json").read_text())["rows"]
    assert [(r["model"], r["mode"], r["batch"]) for r in rows] == [("r400", "ottt_a", 1), ("mlp784", "ottt_o", 2)]
    md = stem.with_suffix(".md").read_text()
    for r in rows:
        assert len(r["rounds_kernels_s"]) == len(r["rounds_torch_s"]) == 3
        assert r["ms_kernels"] == pytest.approx(statistics.median(r["rounds_kernels_s"]) * 1e3)
        assert r["ms_torch"] == pytest.approx(statistics.median(r["rounds_torch_s"]) * 1e3)
        assert r["grad_max_rel_diff"] <= 1e-10
        assert f"| {r['model']} | {r['mode']} | {r['batch']} | {r['ms_kernels']:.2f} |" in md


def test_bad_case_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--cases", "r400:bptt:1", "--out", str(tmp_path / "x")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "MODE ottt_a or ottt_o" in proc.stderr
