"""--batch other than the recipe's rescales the learning rate linearly (supplementary C.2: batch 1
trains with 0.1/128 for the recipe's 0.1 at batch 128), unless --lr is given; the first line says so."""
import json

import pytest
import torch

from ottt_cuda.train import main, parser, resolve
from ottt_cuda.train.recipes import RECIPES


pytestmark = pytest.mark.usefixtures("restore_threads")  # --threads changes the global count


def train(tmp_path, capsys, *extra):
    rc = main(["synthetic", "--epochs", "1", "--limit-batches", "2", "--out-dir", str(tmp_path), "--threads", "1",
               "--no-progress", *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    return json.loads(out.strip().splitlines()[-1]), err.splitlines(), ck


def test_the_paper_recipes_are_what_the_rescaling_starts_from():
    # supplementary C.2 / D.3: lr 0.1 at batch 128 (Adam 1e-3 at 16 for DVS128-Gesture)
    assert (RECIPES["fmnist"].lr, RECIPES["fmnist"].batch) == (0.1, 128)
    assert (RECIPES["cifar10"].lr, RECIPES["cifar10"].batch) == (0.1, 128)
    assert (RECIPES["dvsgesture"].lr, RECIPES["dvsgesture"].batch) == (1e-3, 16)


@pytest.mark.parametrize("dataset, batch, expected", [
    ("fmnist", 1, 0.00078125), ("cifar10", 1, 0.00078125), ("cifar100", 64, 0.05), ("imagenet", 512, 0.2),
    ("dvsgesture", 4, 0.00025), ("cifar10dvs", 256, 0.2),
])
def test_batch_rescales_the_recipe_lr(dataset, batch, expected):
    cfg = resolve(parser().parse_args([dataset, "--batch", str(batch)]))
    assert cfg["lr"] == pytest.approx(expected, rel=1e-12)
    assert f"--batch {batch}" in cfg["lr_note"]


@pytest.mark.parametrize("argv", [["fmnist"], ["fmnist", "--batch", "128"], ["fmnist", "--batch", "1", "--lr", "0.3"]])
def test_no_rescaling_at_the_recipe_batch_or_with_lr(argv):
    cfg = resolve(parser().parse_args(argv))
    assert cfg["lr"] == (0.3 if "--lr" in argv else 0.1) and cfg["lr_note"] is None


def test_batch_1_run_says_so_first_and_trains_with_the_rescaled_lr(tmp_path, capsys):
    # synthetic: lr 0.1 at batch 32 -> 0.1 x 1/32
    res, lines, ck = train(tmp_path, capsys, "--batch", "1")
    assert lines[0] == "lr 0.003125 = 0.1 x 1/32 (linear rescaling for --batch 1; --lr overrides)"
    assert res["lr"] == pytest.approx(0.003125, rel=1e-12)
    assert ck["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.003125, rel=1e-12)


def test_lr_given_is_used_as_is(tmp_path, capsys):
    res, lines, ck = train(tmp_path, capsys, "--batch", "1", "--lr", "0.02")
    assert not any("rescaling" in line for line in lines)
    assert res["lr"] == 0.02 and ck["optimizer"]["param_groups"][0]["initial_lr"] == 0.02


def test_recipe_batch_keeps_the_recipe_lr(tmp_path, capsys):
    res, lines, ck = train(tmp_path, capsys)
    assert not any("rescaling" in line for line in lines)
    assert ck["optimizer"]["param_groups"][0]["initial_lr"] == 0.1
