"""benchmarks/step_rounds.py on a tiny R400 configuration, both ways (fresh processes and --steady):
every method is timed in every round, interleaved in the order given, the summary is the median over
rounds, the ratios in the report are those medians' quotients. No timing is asserted."""
import json
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "step_rounds.py")


@pytest.mark.parametrize("steady", [False, True], ids=["fresh", "steady"])
def test_rounds_interleaved_and_summarized(tmp_path, steady):
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    cmd = [sys.executable, SCRIPT, "--model", "r400", "--batch", "2", "--T", "2", "--threads", "1",
           "--rounds", "2", "--iters", "1", "--methods", "ottt_a", "bptt", "--json", str(out), "--md", str(md)]
    if steady:
        cmd += ["--steady", "--warmup", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    recs = payload["records"]
    assert [(r["round"], r["method"]) for r in recs] == [(i, m) for i in range(2) for m in ("ottt_a", "bptt")]
    assert payload["steady"] is steady
    for m in ("ottt_a", "bptt"):
        s = payload["summary"][f"1/{m}"]
        times = [r["iter_s"] for r in recs if r["method"] == m]
        assert all(t > 0 for t in times)
        assert s["iter_s"] == statistics.median(times) and s["iter_s_rounds"] == times
    ratio = payload["summary"]["1/ottt_a"]["iter_s"] / payload["summary"]["1/bptt"]["iter_s"]
    row = next(line for line in md.read_text().splitlines() if line.startswith("| 1 | ottt_a |"))
    assert row.split("|")[6].strip() == f"{ratio:.2f}"


def test_bad_rounds_are_refused():
    proc = subprocess.run([sys.executable, SCRIPT, "--rounds", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--rounds and --iters must be at least 1" in proc.stderr
