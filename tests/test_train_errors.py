"""Bad input and failing runs lose nothing and say what went wrong:
OTTT_BACKEND named in its error, --resume on a file that is not a checkpoint, and a loss
that turns NaN/Inf (train_step's check_finite and the CLI's stop with the last good
checkpoint kept)."""
import copy
import json
import math

import pytest
import torch

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.train import main
from ottt_cuda.training import NonFiniteLossError

ARGS = ["synthetic", "--epochs", "2", "--limit-batches", "3", "--threads", "1", "--no-progress"]


pytestmark = pytest.mark.usefixtures("restore_threads")  # --threads changes the global count


def _result_line(out):
    return json.loads([line for line in out.splitlines() if line.strip()][-1])


# ----------------------------------------------------------------------------- OTTT_BACKEND

def test_bad_otttbackend_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("OTTT_BACKEND", "nope")
    with pytest.raises(ValueError, match=r"OTTT_BACKEND='nope' \(environment variable\).*backend must be one of"):
        ottt_cuda.ops.lif_step(torch.zeros(2))


def test_forced_backend_that_cannot_run_says_it_came_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTTT_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="forced by the environment variable OTTT_BACKEND.*Unset OTTT_BACKEND"):
        ottt_cuda.ops.lif_step(torch.zeros(2))


# ----------------------------------------------------------------------------- --resume FILE

class _Foreign:  # a pickled object of a class torch's weights_only loader refuses
    pass


def _bad_files(tmp_path):
    good = tmp_path / "good"
    assert main(ARGS + ["--out-dir", str(good), "--stop-after", "1"]) == 0
    raw = (good / "checkpoint.pt").read_bytes()
    files = {"truncated": raw[: len(raw) // 2], "text": b"epoch,loss\n1,0.5\n", "empty": b""}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(data)
    paths["state_dict"] = tmp_path / "state_dict.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), paths["state_dict"])
    paths["foreign_pickle"] = tmp_path / "foreign.pt"
    torch.save({"model": _Foreign()}, paths["foreign_pickle"])
    paths["directory"] = good
    return paths


def test_resume_from_a_file_that_is_not_a_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    paths = _bad_files(tmp_path)
    capsys.readouterr()
    expect = {"truncated": "not a readable ottt-train checkpoint", "text": "not a readable ottt-train checkpoint",
              "empty": "not a readable ottt-train checkpoint", "state_dict": "bare model state_dict",
              "foreign_pickle": "not a readable ottt-train checkpoint", "directory": "is a directory"}
    for name, path in paths.items():
        rc = main(ARGS + ["--out-dir", str(tmp_path / "o"), "--resume", str(path)])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert rc == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("ottt-train: error: --resume: "), (name, err)
        assert str(path) in lines[0] and expect[name] in lines[0], (name, lines[0])
        assert "Traceback" not in err and out == ""


# ----------------------------------------------------------------------------- train_step(check_finite=True)

def _small(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(1), onn.Linear(12, 16, trace=False), onn.LIF(),
                               onn.Linear(16, 3))


def _linear_readout(seed=0):
    # No spiking layer on the path: a NaN input reaches the output, so the loss itself is NaN
    # (a spike gate turns a NaN current into "no spike": then only a gradient is NaN).
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(1), onn.Linear(12, 8, trace=False), onn.Linear(8, 3))


def _snapshot(model, opt):
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def _assert_untouched(model, opt, snap):
    params, state = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    now = opt.state_dict()
    assert now["state"].keys() == state["state"].keys()
    for i, s in state["state"].items():
        for key, v in s.items():
            assert torch.equal(now["state"][i][key], v) if torch.is_tensor(v) else now["state"][i][key] == v


@pytest.mark.parametrize("mode,kw", [("ottt_a", {}), ("ottt_a", {"chunk": 2}), ("sltt", {}),
                                     ("sltt_k", {"k": 2}), ("bptt", {}), ("ottt_o", {})])
@pytest.mark.parametrize("optim", ["sgd_momentum", "adam"])
def test_check_finite_raises_before_any_parameter_or_optimizer_state_changes(mode, kw, optim):
    model = _linear_readout()
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optim == "sgd_momentum"
           else torch.optim.Adam(model.parameters(), lr=1e-2))
    x, y = torch.rand(4, 1, 3, 4), torch.tensor([0, 1, 2, 0])
    # One good step first, so momentum buffers / Adam moments exist and must survive the bad one.
    ottt_cuda.train_step(model, x, y, opt, T=3, mode=mode, check_finite=True, **kw)
    snap = _snapshot(model, opt)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="nan.*optimizer step was not taken") as info:
        ottt_cuda.train_step(model, bad, y, opt, T=3, mode=mode, check_finite=True, **kw)
    assert math.isnan(info.value.value)
    assert info.value.t == (0 if mode == "ottt_o" else None)  # OTTT_O stops at its first time step
    _assert_untouched(model, opt, snap)


def test_check_finite_catches_a_nan_input_that_the_spikes_hide_from_the_loss():
    model = _small()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.rand(4, 1, 3, 4), torch.tensor([0, 1, 2, 0])
    ottt_cuda.train_step(model, x, y, opt, T=2, check_finite=True)
    snap = _snapshot(model, opt)
    x[1, 0, 1, 1] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"gradient of '1.weight' is not finite") as info:
        ottt_cuda.train_step(model, x, y, opt, T=2, check_finite=True)
    assert math.isfinite(info.value.value)
    _assert_untouched(model, opt, snap)


def test_check_finite_catches_an_inf_gradient_with_a_finite_loss():
    model = _small()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = copy.deepcopy(model.state_dict())
    model[1].weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"gradient of '1.weight'") as info:
        ottt_cuda.train_step(model, torch.rand(4, 1, 3, 4), torch.tensor([0, 1, 2, 0]), opt, T=2, check_finite=True)
    assert math.isfinite(info.value.value)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_check_finite_must_be_a_bool():
    with pytest.raises(TypeError, match="check_finite"):
        ottt_cuda.train_step(_small(), torch.rand(4, 12), torch.tensor([0, 1, 2, 0]), None, T=2, check_finite="yes")


# ----------------------------------------------------------------------------- the CLI on a diverging run

def test_cli_stops_at_the_first_nonfinite_loss(tmp_path, capsys):
    rc = main(["synthetic", "--lr", "1e12", "--epochs", "3", "--limit-batches", "4", "--out-dir", str(tmp_path),
               "--threads", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 3, err
    res = _result_line(out)
    assert res["complete"] is False and res["epochs"] == 0 and "non-finite loss" in res["error"]
    assert json.loads((tmp_path / "result.json").read_text()) == res
    assert "epoch 1, step" in err and "--lr" in err and "Traceback" not in err
    # No epoch finished: no checkpoint was written, no metrics row claims one.
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_cli_keeps_the_last_good_checkpoint_when_the_loss_turns_nan(tmp_path, capsys, monkeypatch):
    from ottt_cuda.train import runner

    good = tmp_path / "good"
    assert main(ARGS + ["--out-dir", str(good), "--stop-after", "1"]) == 0
    capsys.readouterr()

    # The same run, but from the second batch of epoch 2 on the input holds a NaN: the real
    # train_step must notice it before the optimizer step.
    calls = {"n": 0}
    real = runner.train_step

    def poisoned(model, x, y, *args, **kw):
        calls["n"] += 1
        if calls["n"] >= 3 + 2:  # 3 batches in epoch 1, then the 2nd of epoch 2
            x = x.clone()
            x.view(-1)[0] = float("nan")
        return real(model, x, y, *args, **kw)

    monkeypatch.setattr(runner, "train_step", poisoned)
    bad = tmp_path / "bad"
    rc = main(ARGS + ["--out-dir", str(bad)])
    out, err = capsys.readouterr()
    assert rc == 3, err
    assert "epoch 2, step 2 of 3: the gradient of" in err and "is not finite" in err, err
    res = _result_line(out)
    assert res["complete"] is False and res["epochs"] == 1 and res["checkpoint"] == str(bad / "checkpoint.pt")

    a = torch.load(good / "checkpoint.pt", map_location="cpu", weights_only=True)
    b = torch.load(bad / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert b["epoch"] == 0
    for k in a["model"]:
        assert torch.isfinite(b["model"][k]).all() and torch.equal(a["model"][k], b["model"][k]), k
    assert len((bad / "metrics.jsonl").read_text().splitlines()) == 1
