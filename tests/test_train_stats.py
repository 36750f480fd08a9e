"""Firing-rate statistics: exact counts on layers with known output, recurrent neurons
counted, no double counting through LIF.multi -> step, and the CLI's JSON + PNG."""
import json

import pytest
import torch
import torch.nn as nn

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.models import r400
from ottt_cuda.train import main
from ottt_cuda.train.stats import SpikeCounter


pytestmark = pytest.mark.usefixtures("restore_threads")  # --threads changes the global count


def test_always_and_never_firing_layers():
    # A huge current fires every step (soft reset keeps it above threshold); zero never fires.
    model = nn.Sequential(onn.LIF(), nn.Flatten(1), onn.Linear(12, 5), onn.LIF())
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    x = torch.full((4, 3, 4), 100.0)
    with SpikeCounter(model) as c:
        ottt_cuda.evaluate(model, x, 6)
    s = c.summary(6)
    first, last = s["layers"]
    assert (first["layer"], first["firing_rate"], first["spikes_per_neuron"], first["neurons"]) == ("0", 1.0, 6.0, 12)
    assert (last["firing_rate"], last["neurons"]) == (0.0, 5)
    assert s["firing_rate"] == pytest.approx(12 / 17)
    # the wrappers are gone afterwards
    assert "step" not in vars(model[0]) and "multi" not in vars(model[0])


@pytest.mark.parametrize("mode", ["ottt", "bptt"])
def test_multistep_counted_once(mode):
    lif = onn.LIF(step_mode="m")
    ottt_cuda.set_mode(lif, mode)
    x = torch.full((5, 2, 3), 50.0)
    with SpikeCounter(nn.Sequential(lif)) as c:
        lif(x)
    assert c.count["0"] == x.numel() and c.spikes["0"] == x.numel()


def test_recurrent_neurons_are_counted():
    model = r400(10, in_features=16, hidden=8, dropout=0.0)
    x = torch.rand(3, 1, 4, 4) * 5
    with SpikeCounter(model) as c:
        ottt_cuda.evaluate(model, x, 4)
    assert [n for n, _ in c.layers] == ["rnn.neuron"]
    assert c.count["rnn.neuron"] == 4 * 3 * 8 and c.neurons["rnn.neuron"] == 8


def test_cli_stats_outputs(tmp_path, capsys):
    rc = main(["synthetic", "--epochs", "1", "--limit-batches", "2", "--stats", "--out-dir", str(tmp_path),
               "--threads", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out.splitlines()[-1])
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["T"] == 4 and stats["layers"] and stats["layers"][0]["layer"] == "rnn.neuron"
    assert 0.0 <= stats["firing_rate"] <= 1.0
    assert stats["spikes_per_neuron"] == pytest.approx(stats["firing_rate"] * 4)
    assert res["firing_rate"] == stats["firing_rate"]
    png = tmp_path / "firing_rates.png"
    pytest.importorskip("matplotlib")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
