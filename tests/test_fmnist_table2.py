"""benchmarks/fmnist_table2.py: the Table 2 report reads run directories written by the training
CLI and computes per-seed final/best and per-arm means; the expected numbers here are worked out by
hand from the fake curves."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import fmnist_table2  # noqa: E402


def _fake_run(root, name, mode, accs, target):
    d = root / name
    d.mkdir()
    with open(d / "metrics.csv", "w") as f:
        f.write("epoch,train_loss,train_acc,test_acc,best_test_acc,lr,epoch_time_s,train_time_s,steps_per_s\n")
        for i, a in enumerate(accs, 1):
            f.write(f"{i},0.5,0.8,{a},{max(accs[:i])},0.1,1.0,{i}.0,10\n")
    with open(d / "result.json", "w") as f:
        json.dump({"mode": mode, "epochs_target": target, "test_acc": accs[-1]}, f)
    return str(d)


def test_means_best_and_incomplete_runs(tmp_path):
    a0 = _fake_run(tmp_path, "a0", "ottt_a", [0.80, 0.905, 0.90], 3)
    a1 = _fake_run(tmp_path, "a1", "ottt_a", [0.81, 0.90, 0.904], 3)
    a2 = _fake_run(tmp_path, "a2", "ottt_a", [0.95, 0.96], 3)          # stopped early: not in the means
    b0 = _fake_run(tmp_path, "b0", "bptt", [0.85, 0.906, 0.902], 3)
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    assert fmnist_table2.main(["--run", f"base:0={a0}", "--run", f"base:1={a1}", "--run", f"base:2={a2}",
                               "--run", f"drop:0={b0}", "--json", str(out), "--md", str(md)]) == 0
    data = json.load(open(out))
    groups = {(g["arm"], g["mode"]): g for g in data["groups"]}
    g = groups[("base", "ottt_a")]
    assert g["seeds"] == [0, 1] and g["incomplete"] == [2]
    assert g["final_mean"] == pytest.approx((90.0 + 90.4) / 2)
    assert g["best_mean"] == pytest.approx((90.5 + 90.4) / 2)
    assert g["final_std"] == pytest.approx(0.4 / 2 ** 0.5)
    assert g["paper"] == 90.36
    b = groups[("drop", "bptt")]
    assert b["final_mean"] == pytest.approx(90.2) and b["final_std"] is None and b["paper"] == 90.58
    runs = {(r["arm"], r["seed"]): r for r in data["runs"]}
    assert runs[("base", 0)]["best_epoch"] == 2 and runs[("base", 2)]["epochs"] == 2
    text = md.read_text()
    assert "| base | ottt_a | 0,1 | 90.20 ± 0.28 | 90.45 ± 0.07 | 90.36 | -0.16 |" in text
    assert "| base | ottt_a | 2 | 2/3 | 96.00 | 96.00 (2) |" in text


def test_bad_run_argument_names_the_option(tmp_path):
    with pytest.raises(SystemExit):
        fmnist_table2.main(["--run", "no-equals-sign"])


def _write_idx(path, arr):
    import struct

    import numpy as np

    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes())


def test_protocol_script_runs_seeds_and_resumes(tmp_path):
    # benchmarks/fmnist_table2_runs.sh on a tiny fabricated Fashion-MNIST: two seeds at once, then the
    # same command again continues each run from its checkpoint instead of starting over.
    import subprocess

    import numpy as np

    rng = np.random.default_rng(0)
    data_dir = tmp_path / "fm"
    data_dir.mkdir()
    for split, n in (("train", 32), ("t10k", 16)):
        _write_idx(data_dir / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(data_dir / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    root = os.path.join(os.path.dirname(__file__), "..")
    out = tmp_path / "t2"

    def run(extra=""):
        cmd = ["bash", os.path.join(root, "benchmarks", "fmnist_table2_runs.sh"), "--out", str(out), "--jobs", "2",
               "--seeds", "0 1", "--modes", "ottt_a", "--epochs", "2",
               "--extra", f"--data-dir {data_dir} --limit-batches 1 --workers 0 --batch 16 {extra}"]
        env = dict(os.environ, PYTHON=sys.executable)
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr + p.stdout

    run("--stop-after 1")
    report = json.loads((out / "table2.json").read_text())
    assert sorted(r["seed"] for r in report["runs"]) == [0, 1]
    assert all(r["epochs"] == 1 and r["mode"] == "ottt_a" for r in report["runs"])
    assert report["groups"][0]["incomplete"] == [0, 1] and report["groups"][0]["final_mean"] is None
    run()
    for seed in (0, 1):
        rows = (out / f"ottt_a_s{seed}" / "metrics.csv").read_text().splitlines()
        assert [line.split(",")[0] for line in rows[1:]] == ["1", "2"]
        assert "resumed from" in (out / f"ottt_a_s{seed}" / "stderr.txt").read_text()
    report = json.loads((out / "table2.json").read_text())
    assert report["groups"][0]["seeds"] == [0, 1] and report["groups"][0]["incomplete"] == []
