"""Running ottt-train in-process for the tests: its exit status and output, the result line, the
keyword arguments of every train_step it makes, and the model it saved."""
import json

import torch

from ottt_cuda.train import main


def run_cli(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def last_json(out):
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines, "nothing on stdout"
    return json.loads(lines[-1])


def record_train_steps(monkeypatch):
    """Wrap the runner's train_step: record the keyword arguments of every call, and the
    parameters before the first one (to see that the run trained)."""
    from ottt_cuda.train import runner
    calls, initial = [], {}
    real = runner.train_step

    def spy(model, x, y, optimizer, **kw):
        if not initial:
            initial.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        calls.append(kw)
        return real(model, x, y, optimizer, **kw)

    monkeypatch.setattr(runner, "train_step", spy)
    return calls, initial


def trained_model(out_dir):
    return torch.load(out_dir / "checkpoint.pt", weights_only=True)["model"]
