"""Checkpoint/resume: 2 epochs straight == 1 epoch, stop, resume 1 epoch (bitwise), with dropout
and shuffling so every RNG matters; a resume with different options is refused."""
import json

import pytest
import torch

from ottt_cuda.train import main

ARGS = ["synthetic", "--epochs", "2", "--limit-batches", "6", "--dropout", "0.2", "--threads", "1", "--no-progress"]


pytestmark = pytest.mark.usefixtures("restore_threads")  # --threads changes the global count


def _ckpt(d):
    return torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
def test_resume_is_bitwise_identical(tmp_path, capsys, mode):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(ARGS + ["--mode", mode, "--out-dir", str(straight)]) == 0
    assert main(ARGS + ["--mode", mode, "--out-dir", str(split), "--stop-after", "1"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert first["epochs"] == 1 and not first["complete"]
    assert main(ARGS + ["--mode", mode, "--out-dir", str(split), "--resume", str(split / "checkpoint.pt")]) == 0
    resumed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert resumed["epochs"] == 2 and resumed["complete"]

    a, b = _ckpt(straight), _ckpt(split)
    assert a["epoch"] == b["epoch"] == 1
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    rows_a = [json.loads(l) for l in (straight / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (split / "metrics.jsonl").read_text().splitlines()]
    keys = ("epoch", "train_loss", "train_acc", "test_acc", "lr")
    assert [{k: r[k] for k in keys} for r in rows_a] == [{k: r[k] for k in keys} for r in rows_b]


def test_resume_with_other_options_is_refused(tmp_path, capsys):
    assert main(ARGS + ["--out-dir", str(tmp_path), "--stop-after", "1"]) == 0
    capsys.readouterr()
    rc = main(ARGS + ["--out-dir", str(tmp_path), "--lr", "0.3", "--resume", str(tmp_path / "checkpoint.pt")])
    assert rc == 2 and "lr" in capsys.readouterr().err


def test_resume_missing_checkpoint(tmp_path, capsys):
    rc = main(ARGS + ["--out-dir", str(tmp_path), "--resume", str(tmp_path / "nope.pt")])
    assert rc == 2 and "nope.pt" in capsys.readouterr().err
