"""benchmarks/kernels_rounds.py on a tiny configuration: both sides run in every round, in
alternating order, the report's cells are the medians of the runs' own values, and a --before
checkout with another kernels.py is refused. No timing is asserted."""
import json
import os
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "kernels_rounds.py")


def _run(tmp_path, before, rounds=2):
    stem = tmp_path / "k"
    cmd = [sys.executable, SCRIPT, "--before", str(before), "--rounds", str(rounds), "--numel", "64",
           "--batches", "1", "--threads", "1", "--out", str(stem)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600), stem


def test_rounds_interleaved_and_medians_reported(tmp_path):
    proc, stem = _run(tmp_path, ROOT)  # this checkout on both sides: the report's mechanics only
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((stem.with_suffix(".json")).read_text())["runs"]
    assert [(r["round"], r["build"]) for r in runs] == [(1, "before"), (1, "after"), (2, "after"), (2, "before")]
    md = (stem.with_suffix(".md")).read_text()
    for build, col in (("before", 3), ("after", 4)):
        ms = [row["ms"] for r in runs if r["build"] == build for row in r["rows"]
              if row["op"] == "outer_accumulate_ B=1" and row["backend"] == "eager addmm_"]
        assert len(ms) == 2 and all(m > 0 for m in ms)
        line = next(x for x in md.splitlines() if x.startswith("| outer_accumulate_ B=1 | eager addmm_ |"))
        assert line.split("|")[col].strip() == f"{statistics.median(ms):.4f}"


def test_another_kernels_py_is_refused(tmp_path):
    other = tmp_path / "other"
    (other / "benchmarks").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "benchmarks", "kernels.py"), other / "benchmarks" / "kernels.py")
    with open(other / "benchmarks" / "kernels.py", "a") as f:
        f.write("# changed\n")
    proc, stem = _run(tmp_path, other, rounds=1)
    assert proc.returncode == 2
    assert "another benchmarks/kernels.py" in proc.stderr
    assert not stem.with_suffix(".md").exists()
