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


# --malloc default end to end (a real run) is left out: it is the "fresh" run with one flag passed on, which
# test_malloc_is_passed_on_to_the_bench checks, report included, without the 25 s of real runs.
@pytest.mark.parametrize("steady,malloc", [(False, "tracking"), (True, None)], ids=["fresh", "steady"])
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


def test_malloc_is_passed_on_to_the_bench(monkeypatch, tmp_path):
    # Fresh processes: each configuration is `python -m ottt_cuda.bench ... --malloc X` (the bench keeps or drops
    # its RSS-tracking malloc settings: tests/test_bench.py).
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import step_rounds

    seen = []
    real_run = subprocess.run

    def fake_run(cmd, **kw):
        if cmd[1:3] != ["-m", "ottt_cuda.bench"]:
            return real_run(cmd, **kw)  # the report's machine description (lscpu and the like)
        seen.append(cmd)
        out = cmd[cmd.index("--json") + 1]
        with open(out, "w") as f:
            json.dump([{"method": "ottt_a", "iter_s": 1.0, "peak_mb": float("nan"), "saved_mb": 3.0}], f)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(step_rounds.subprocess, "run", fake_run)
    for malloc in ("default", "tracking"):
        args = step_rounds.argparse.Namespace(malloc=malloc, model="r400", T=3, batch=4, iters=2, timeout=60)
        rec = step_rounds.run_one("ottt_a", args, 2, str(tmp_path / "r.json"))
        assert rec["iter_s"] == 1.0
        assert seen[-1][1:3] == ["-m", "ottt_cuda.bench"] and seen[-1][seen[-1].index("--malloc") + 1] == malloc
    assert step_rounds._mb(float("nan")) == "–" and step_rounds._mb(12.4) == "12"

    # The whole script with --malloc default: every run gets the flag, and the report says which malloc ran.
    seen.clear()
    out, md = tmp_path / "d.json", tmp_path / "d.md"
    step_rounds.main(["--model", "r400", "--batch", "2", "--T", "2", "--threads", "1", "--rounds", "2",
                      "--iters", "1", "--methods", "ottt_a", "--malloc", "default", "--json", str(out), "--md", str(md)])
    assert len(seen) == 2 and all(c[c.index("--malloc") + 1] == "default" for c in seen)
    assert json.loads(out.read_text())["malloc"] == "default"
    assert "the C library's default malloc" in md.read_text()


def test_malloc_with_steady_is_refused():
    proc = subprocess.run([sys.executable, SCRIPT, "--steady", "--malloc", "default"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--malloc is for fresh processes" in proc.stderr
