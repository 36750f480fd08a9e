"""ottt_cuda.train end to end on the built-in synthetic task: the result line, metrics files,
option handling, learning, and `python -m ottt_cuda.train` as a real process."""
import json
import os
import subprocess
import sys

import pytest
import torch

from ottt_cuda.train import RECIPES, main, parser, resolve
from _train_cli import last_json, record_train_steps, run_cli, trained_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_KEYS = {"dataset", "mode", "epochs", "test_acc", "best_test_acc", "train_time_s"}


pytestmark = pytest.mark.usefixtures("restore_threads")  # --threads changes the global count


def test_synthetic_end_to_end(tmp_path, capsys):
    rc, out, err = run_cli(["synthetic", "--epochs", "2", "--limit-batches", "4", "--out-dir", str(tmp_path),
                            "--threads", "1"], capsys)
    assert rc == 0, err
    res = last_json(out)
    assert RESULT_KEYS <= res.keys()
    assert res["dataset"] == "synthetic" and res["mode"] == "ottt_a" and res["epochs"] == 2 and res["complete"]
    assert 0.0 <= res["test_acc"] <= res["best_test_acc"] <= 1.0
    # one log line per epoch and a progress bar (steps/s) on stderr
    assert err.count("epoch 1/2 loss") == 1 and err.count("epoch 2/2 loss") == 1
    assert "steps/s" in err
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,") and len(csv_lines) == 3
    assert json.loads((tmp_path / "result.json").read_text()) == res
    assert (tmp_path / "checkpoint.pt").is_file()


@pytest.mark.parametrize("mode", ["ottt_o", "sltt", "sltt_k", "bptt"])
def test_other_modes_train_with_that_mode(tmp_path, capsys, monkeypatch, mode):
    calls, initial = record_train_steps(monkeypatch)
    rc, out, err = run_cli(["synthetic", "--mode", mode, "--epochs", "1", "--limit-batches", "2", "--out-dir",
                            str(tmp_path), "--threads", "1", "--no-progress"], capsys)
    assert rc == 0, err
    assert last_json(out)["mode"] == mode
    # every training step ran in that mode (SLTT-K with the default k = ceil(T / 2) of T = 4 steps)
    assert len(calls) == 2 and all(c["mode"] == mode and c["T"] == 4 for c in calls)
    assert all(c["k"] == (2 if mode == "sltt_k" else None) and c["chunk"] is None for c in calls)
    # and the saved model is the trained one: its weights moved away from the initial ones
    saved = trained_model(tmp_path)
    moved = [k for k, v in saved.items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert any(k.endswith("weight") for k in moved), moved


def test_chunked_ottt_a_trains_the_same_model(tmp_path, capsys, monkeypatch):
    """--chunk K computes the same OTTT_A gradients K steps at a time: same run, same model."""
    argv = ["synthetic", "--epochs", "1", "--limit-batches", "2", "--threads", "1", "--no-progress"]
    rc, _, err = run_cli(argv + ["--out-dir", str(tmp_path / "plain")], capsys)
    assert rc == 0, err
    calls, _ = record_train_steps(monkeypatch)
    rc, out, err = run_cli(argv + ["--chunk", "2", "--out-dir", str(tmp_path / "chunk")], capsys)
    assert rc == 0, err
    assert calls and all(c["chunk"] == 2 and c["mode"] == "ottt_a" for c in calls)
    plain, chunked = trained_model(tmp_path / "plain"), trained_model(tmp_path / "chunk")
    for k, v in plain.items():
        torch.testing.assert_close(chunked[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_learns_well_above_chance(tmp_path, capsys):
    # 10 classes (chance 0.1); three short epochs of the default synthetic recipe.
    rc, out, err = run_cli(["synthetic", "--out-dir", str(tmp_path), "--threads", "1", "--no-progress"], capsys)
    assert rc == 0, err
    assert last_json(out)["test_acc"] > 0.6


def test_recipe_defaults_and_overrides():
    p = parser()
    cfg = resolve(p.parse_args(["fmnist"]))
    assert (cfg["model"], cfg["T"], cfg["epochs"], cfg["batch"], cfg["lr"], cfg["wd"], cfg["dropout"],
            cfg["loss_alpha"], cfg["optimizer"], cfg["schedule"], cfg["momentum"]) == \
        ("r400", 5, 100, 128, 0.1, 5e-4, 0.2, 0.05, "sgd", "cosine", 0.9)
    assert resolve(p.parse_args(["fmnist", "--mode", "ottt_o"]))["wd"] == 1e-4  # D.3: OTTT_O uses 1e-4
    assert resolve(p.parse_args(["fmnist", "--mode", "ottt_o", "--wd", "0.002"]))["wd"] == 0.002
    g = resolve(p.parse_args(["dvsgesture"]))
    assert (g["optimizer"], g["lr"], g["batch"], g["T"], g["num_classes"]) == ("adam", 1e-3, 16, 20, 11)
    im = resolve(p.parse_args(["imagenet"]))
    assert (im["model"], im["schedule"], im["wd"], im["loss_alpha"], im["batch"]) == \
        ("nf_resnet34", "step30", 2e-5, 0.0, 256)
    c = resolve(p.parse_args(["cifar10dvs"]))
    assert (c["T"], c["dropout"], c["loss_alpha"]) == (10, 0.1, 0.001)
    o = resolve(p.parse_args(["cifar100", "--T", "2", "--epochs", "3", "--batch", "8", "--lr", "0.5", "--amp", "bf16",
                              "--mode", "sltt_k", "--k", "1", "--seed", "7", "--workers", "0"]))
    assert (o["T"], o["epochs"], o["batch"], o["lr"], o["amp"], o["k"], o["seed"], o["workers"]) == \
        (2, 3, 8, 0.5, "bf16", 1, 7, 0)
    assert set(RECIPES) == {"fmnist", "cifar10", "cifar100", "cifar10dvs", "dvsgesture", "imagenet", "synthetic"}


def test_bad_options_are_clear_errors(tmp_path, capsys):
    rc, _, err = run_cli(["synthetic", "--mode", "ottt_o", "--chunk", "2", "--out-dir", str(tmp_path)], capsys)
    assert rc == 2 and "--chunk" in err
    rc, _, err = run_cli(["synthetic", "--mode", "sltt_k", "--k", "9", "--out-dir", str(tmp_path)], capsys)
    assert rc == 2 and "--k" in err
    with pytest.raises(SystemExit):
        parser().parse_args(["mnist"])


def test_python_dash_m_last_line_is_json(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "ottt_cuda.train", "synthetic", "--epochs", "1", "--limit-batches",
                           "2", "--out-dir", str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert RESULT_KEYS <= last_json(proc.stdout).keys()


def test_report_marks_partial_runs(tmp_path, capsys):
    from ottt_cuda.train import report
    assert main(["synthetic", "--epochs", "3", "--limit-batches", "2", "--stop-after", "1", "--out-dir", str(tmp_path),
                 "--threads", "1", "--no-progress"]) == 0
    capsys.readouterr()
    s = report.summarize(str(tmp_path), command="ottt-train synthetic ...")
    assert s["status"] == "partial: 1 of 3 epochs" and s["epochs_done"] == 1 and len(s["per_epoch"]) == 1
    assert s["config"]["dataset"] == "synthetic" and s["command"] == "ottt-train synthetic ..."
    assert report.main([str(tmp_path), "-o", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["epochs_done"] == 1
