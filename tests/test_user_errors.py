"""Every public function, layer and ottt-train option refuses a user mistake (wrong type, shape,
dtype, device, range or file) with an error that names the argument, raised by ottt_cuda itself,
never from deep inside torch. The ops' own checks are in test_validation.py."""
import traceback

import pytest
import torch

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.train import main


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(1), onn.Linear(12, 8, trace=False), onn.LIF(), onn.Linear(8, 3))


X, Y = torch.rand(4, 12), torch.tensor([0, 1, 2, 0])


def _opt(m):
    return torch.optim.SGD(m.parameters(), lr=0.1)


def train_step(**kw):
    m = kw.pop("model", None) or _model()
    args = dict(x=X, y=Y, optimizer=_opt(m), T=2)
    args.update(kw)
    return ottt_cuda.train_step(m, args.pop("x"), args.pop("y"), args.pop("optimizer"), **args)


CASES = [
    # train_step / evaluate
    ("model", TypeError, lambda: ottt_cuda.train_step("net", X, Y, None, T=2)),
    ("optimizer", TypeError, lambda: train_step(optimizer="sgd")),
    ("scaler", TypeError, lambda: train_step(scaler=1.0)),
    ("sequence", TypeError, lambda: train_step(sequence="yes")),
    ("check_finite", TypeError, lambda: train_step(check_finite=1)),
    ("T", TypeError, lambda: train_step(T=2.0)),
    ("x", TypeError, lambda: train_step(x=X.long())),
    ("x", TypeError, lambda: train_step(x=X.tolist())),
    ("x is on meta", ValueError, lambda: train_step(x=X.to("meta"))),
    ("in_features=12.*input x", ValueError, lambda: train_step(x=torch.rand(4, 13))),
    ("y must hold integer class indices", TypeError, lambda: train_step(y=Y.float())),
    ("y must hold class indices >= 0", ValueError, lambda: train_step(y=torch.tensor([0, 1, -1, 0]))),
    ("y holds class index 7 but the model has 3 outputs", ValueError, lambda: train_step(y=torch.tensor([0, 7, 1, 0]))),
    ("y is on meta", ValueError, lambda: train_step(y=Y.to("meta"))),
    ("model", TypeError, lambda: ottt_cuda.evaluate(None, X, 2)),
    ("x", TypeError, lambda: ottt_cuda.evaluate(_model(), X.tolist(), 2)),
    ("x", TypeError, lambda: ottt_cuda.evaluate(_model(), X.int(), 2)),
    ("amp", ValueError, lambda: ottt_cuda.evaluate(_model(), X, 2, amp="fp8")),
    ("in_features=12.*input x", ValueError, lambda: ottt_cuda.evaluate(_model(), torch.rand(4, 13), 2)),
    # layers
    ("in_features", TypeError, lambda: onn.Linear("12", 3)),
    ("out_features", ValueError, lambda: onn.Linear(12, 0)),
    ("bias", TypeError, lambda: onn.Linear(12, 3, bias="no")),
    ("in_channels", ValueError, lambda: onn.Conv2d(-1, 3, 3)),
    ("kernel_size", TypeError, lambda: onn.Conv2d(2, 3, "3")),
    ("kernel_size", ValueError, lambda: onn.Conv2d(2, 3, 0)),
    ("stride", TypeError, lambda: onn.Conv2d(2, 3, 3, stride=(1, 2, 3))),
    ("padding", ValueError, lambda: onn.Conv2d(2, 3, 3, padding=-1)),
    ("padding", ValueError, lambda: onn.Conv2d(2, 3, 3, padding="full")),
    ("groups", ValueError, lambda: onn.Conv2d(2, 3, 3, groups=2)),
    ("gain", TypeError, lambda: onn.WSConv2d(2, 4, 3, gain="yes")),
    ("ws", TypeError, lambda: onn.RecurrentLIF(4, 3, ws=1)),
    ("input_trace", TypeError, lambda: onn.RecurrentLIF(4, 3, input_trace=None)),
    ("trace_decay", ValueError, lambda: onn.RecurrentLIF(4, 3, trace_decay=2.0)),
    ("in_features", TypeError, lambda: onn.RecurrentLIF(4.0, 3)),
    ("x", TypeError, lambda: onn.Linear(2, 3)([1.0, 2.0])),
    ("x", TypeError, lambda: onn.Linear(2, 3)(torch.ones(1, 2, dtype=torch.long))),
    (r"Linear\(in_features=2.*input x must have shape \[B, \.\.\., 2\]", ValueError,
     lambda: onn.Linear(2, 3)(torch.ones(1, 5))),
    (r"Conv2d\(2, 3.*input x must have shape \[B, 2, \*, \*\]", ValueError,
     lambda: onn.Conv2d(2, 3, 3)(torch.ones(1, 4, 8, 8))),
    (r"input x must have shape \[T, B, 2, \*, \*\]", ValueError,
     lambda: onn.Conv2d(2, 3, 3, step_mode="m")(torch.ones(2, 1, 4, 8, 8))),
    ("x", TypeError, lambda: onn.LIF()([0.5])),
    ("seq_len", ValueError, lambda: onn.set_step_mode(_model(), "m", seq_len=0)),
    ("model", TypeError, lambda: onn.set_step_mode("net", "m")),
    ("T", ValueError, lambda: onn.multistep(_model(), 0).__enter__()),
    ("mode", ValueError, lambda: onn.modes(_model(), "online").__enter__()),
    ("model", TypeError, lambda: onn.hoisted([]).__enter__()),
    ("weight", TypeError, lambda: onn.standardize([[1.0]], None, 1e-4)),
    ("weight", ValueError, lambda: onn.standardize(torch.ones(3), None, 1e-4)),
    ("inplace", TypeError, lambda: ottt_cuda.convert(_model(), inplace="yes")),
    # model builders: their own argument is named, not an inner layer's
    ("num_classes.*>= 1", ValueError, lambda: ottt_cuda.models.r400(0)),
    ("num_classes.*int", TypeError, lambda: ottt_cuda.models.vgg11_ws("a")),
    ("in_channels.*>= 1", ValueError, lambda: ottt_cuda.models.nf_resnet34(10, in_channels=0)),
    ("fc_hw.*>= 1", ValueError, lambda: ottt_cuda.models.vgg11f_ws(10, fc_hw=0)),
    # backend selection
    ("set_backend.*string", TypeError, lambda: ottt_cuda.set_backend(3)),
    ("device", ValueError, lambda: ottt_cuda.get_backend("gpu")),
    ("device", TypeError, lambda: ottt_cuda.get_backend(0)),
]


def _raised_by_us(exc):
    """The frame that raised is ottt_cuda's (a user mistake is caught before torch sees it)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return "ottt_cuda" in frames[-1].filename


@pytest.mark.parametrize("name,exc,call", CASES, ids=[f"{i}-{c[0][:30]}" for i, c in enumerate(CASES)])
def test_public_api_names_the_bad_argument(name, exc, call):
    with pytest.raises(exc, match=name) as info:
        call()
    assert _raised_by_us(info.value), traceback.format_exception(info.value)[-3:]


def test_good_values_still_pass():
    """The checks refuse only mistakes: the forms torch accepts still work."""
    assert onn.Conv2d(2, 4, (3, 1), stride=(1, 2), padding=(1, 0), groups=2)(torch.ones(1, 2, 6, 6)).shape == \
        (1, 4, 6, 3)
    assert onn.Conv2d(2, 3, 3, padding="same")(torch.ones(1, 2, 5, 5)).shape == (1, 3, 5, 5)
    assert onn.Linear(3, 2)(torch.ones(5, 4, 3)).shape == (5, 4, 2)  # extra leading dims, as torch.nn.Linear
    assert ottt_cuda.get_backend(torch.device("cpu")) == ottt_cuda.get_backend("cpu")
    loss, out = train_step(y=torch.tensor([0, 1, 2, 2], dtype=torch.int32))  # any integer dtype
    assert torch.isfinite(loss) and out.shape == (4, 3)


CLI = ["synthetic", "--epochs", "1", "--limit-batches", "1", "--threads", "1", "--no-progress"]


@pytest.mark.parametrize("extra,option", [
    (["--lr", "-1"], "--lr"), (["--lr", "nan"], "--lr"), (["--wd", "-0.1"], "--wd"), (["--momentum", "1.5"], "--momentum"),
    (["--optimizer", "adam", "--momentum", "0.5"], "--momentum"), (["--dropout", "1"], "--dropout"),
    (["--loss-alpha", "2"], "--loss-alpha"), (["--device", "gpu"], "--device"), (["--device", "meta"], "--device"),
    (["--device", "cuda:99"], "--device"), (["--batch", "0"], "--batch"), (["--image-size", "0"], "--image-size"),
    (["--k", "2"], "--k"), (["--T", "0"], "--T"), (["--stop-after", "0"], "--stop-after"),
])
def test_cli_option_out_of_range_is_one_line_exit_2(tmp_path, capsys, extra, option):
    rc = main(CLI + ["--out-dir", str(tmp_path / "o")] + extra)
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ottt-train: error: {option} "), err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_cli_out_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("not a directory")
    for out_dir, why in ((f, "is a file"), (f / "sub", "cannot be created")):
        rc = main(CLI + ["--out-dir", str(out_dir)])
        err = capsys.readouterr().err
        assert rc == 2 and "--out-dir" in err and why in err and "Traceback" not in err


def test_cli_unknown_choice_is_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(CLI + ["--mode", "online"])
    assert info.value.code == 2 and "--mode" in capsys.readouterr().err
