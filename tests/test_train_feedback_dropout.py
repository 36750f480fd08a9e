"""--feedback-dropout: where the recurrent models' dropout mask goes, from the recipe or
the command line, into the model that is built; refused for models without a recurrence; kept
in checkpoints, with checkpoints written before the option resuming as 'off'."""
import pytest
import torch

from ottt_cuda.train import main, parser, resolve
from ottt_cuda.train.runner import build_model

ARGS = ["synthetic", "--epochs", "2", "--limit-batches", "2", "--dropout", "0.2", "--threads", "1", "--no-progress"]


pytestmark = pytest.mark.usefixtures("restore_threads")  # --threads changes the global count


def test_recipe_default_and_override():
    p = parser()
    assert resolve(p.parse_args(["fmnist"]))["feedback_dropout"] is True     # the fmnist recipe (see recipes.py)
    assert resolve(p.parse_args(["synthetic"]))["feedback_dropout"] is False
    assert resolve(p.parse_args(["fmnist", "--feedback-dropout", "off"]))["feedback_dropout"] is False
    assert resolve(p.parse_args(["synthetic", "--feedback-dropout", "on"]))["feedback_dropout"] is True
    assert resolve(p.parse_args(["cifar10"]))["feedback_dropout"] is False


@pytest.mark.parametrize("feedback", [True, False])
def test_the_built_model_puts_the_mask_where_asked(feedback):
    cfg = resolve(parser().parse_args(["fmnist", "--feedback-dropout", "on" if feedback else "off"]))
    m = build_model(cfg, (1, 28, 28))
    # One dropout of p = 0.2 on the hidden spikes: inside the recurrent layer (fed-back spikes dropped
    # too) or after it (readout path only); the other one is the identity.
    assert (m.rnn.dropout.p, m.dropout.p) == ((0.2, 0.0) if feedback else (0.0, 0.2))


def test_refused_for_a_model_without_recurrence(tmp_path, capsys):
    rc = main(["cifar10", "--feedback-dropout", "on", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--feedback-dropout" in err and "vgg11_ws" in err


def test_checkpoint_keeps_it_and_old_checkpoints_resume_as_off(tmp_path, capsys):
    assert main(ARGS + ["--out-dir", str(tmp_path), "--stop-after", "1", "--feedback-dropout", "on"]) == 0
    ck = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["config"]["feedback_dropout"] is True
    capsys.readouterr()
    rc = main(ARGS + ["--out-dir", str(tmp_path), "--resume", str(tmp_path / "checkpoint.pt")])  # now off
    assert rc == 2 and "feedback_dropout" in capsys.readouterr().err
    # A checkpoint from before the option existed: resumes with it off, is refused with it on.
    del ck["config"]["feedback_dropout"]
    torch.save(ck, tmp_path / "old.pt")
    rc = main(ARGS + ["--out-dir", str(tmp_path), "--resume", str(tmp_path / "old.pt"), "--feedback-dropout", "on"])
    assert rc == 2 and "feedback_dropout" in capsys.readouterr().err
    assert main(ARGS + ["--out-dir", str(tmp_path), "--resume", str(tmp_path / "old.pt")]) == 0


def test_model_argument_is_checked():
    from ottt_cuda.models import r400

    with pytest.raises(TypeError, match="feedback_dropout"):
        r400(feedback_dropout=1)
    with pytest.raises(ValueError, match="p must be < 1"):
        r400(dropout=1.0, feedback_dropout=True)
