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


@pytest.mark.parametrize("steady,malloc", [(False, "tracking"), (False, "default"), (True, None)],
                         ids=["fresh", "fresh-default-malloc", "steady"])
def test_rounds_interleaved_and_summarized(tmp_path, steady, malloc):
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    cmd = [sys.executable, SCRIPT, "--model", "r400", "--batch", "2", "--T", "2", "--threads", "1",
           "--rounds", "2", "--iters", "1", "--methods", "ottt_a", "bptt", "--json", str(out), "--md", str(md)]
    if steady:
        cmd += ["--steady", "--warmup", "1"]
    if malloc:
        cmd += ["--malloc", malloc]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    recs = payload["records"]
    assert [(r["round"], r["method"]) for r in recs] == [(i, m) for i in range(2) for m in ("ottt_a", "bptt")]
    assert payload["steady"] is steady and payload["malloc"] == malloc
    assert ("the C library's default malloc" in md.read_text()) is (malloc == "default")
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


def test_default_malloc_workers_run_without_the_tracking_settings(monkeypatch):
    # --malloc default: the worker's environment lacks the bench's MALLOC_* settings even where the
    # caller's has them, and the worker gets the configuration asked for.
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import step_rounds

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    seen = []

    def fake_run(cmd, **kw):
        seen.append((cmd, kw["env"]))
        record = {"iter_s": 1.0, "peak_mb": 2.0, "saved_mb": 3.0}
        return subprocess.CompletedProcess(cmd, 0, stdout="noise\n" + json.dumps(record) + "\n", stderr="")

    monkeypatch.setattr(step_rounds.subprocess, "run", fake_run)
    args = step_rounds.argparse.Namespace(malloc="default", model="r400", T=3, batch=4, iters=2, timeout=60)
    rec = step_rounds.run_one("ottt_a", args, 2, None)
    assert rec["iter_s"] == 1.0
    cmd, env = seen[0]
    assert cmd[1:3] == ["-m", "ottt_cuda.bench.worker"]
    assert json.loads(cmd[3]) == {"method": "ottt_a", "model": "r400", "T": 3, "batch": 4, "device": "cpu",
                                  "iters": 2, "threads": 2}
    assert "MALLOC_MMAP_THRESHOLD_" not in env and "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["PYTHONPATH"].split(os.pathsep)[0] == ROOT


def test_malloc_with_steady_is_refused():
    proc = subprocess.run([sys.executable, SCRIPT, "--steady", "--malloc", "default"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--malloc is for fresh processes" in proc.stderr
