"""`ottt-train --cuda-graph`: the option reaches train_step, what it cannot do is
refused by name before any data is read, and a run with it trains the same model as one without.

No GPU here: the end-to-end test lifts the device checks and runs the captured step's body eagerly
(nn._graph with capture off, as tests/test_cuda_graph_step.py does); the capture itself is checked by
that file's tests marked cuda, on a GPU.
"""
import pytest
import torch

from ottt_cuda import _backend
from ottt_cuda.nn import _graph
from ottt_cuda.train import main
from conftest import cuda_only
from _train_cli import last_json, record_train_steps, run_cli, trained_model

pytestmark = pytest.mark.usefixtures("restore_threads")

ARGV = ["synthetic", "--epochs", "1", "--limit-batches", "3", "--threads", "1", "--no-progress"]


@pytest.mark.parametrize("extra,words", [
    (["--mode", "bptt"], ["--cuda-graph", "bptt"]),
    (["--mode", "ottt_o"], ["--cuda-graph", "ottt_o"]),
    (["--amp", "bf16"], ["--cuda-graph", "--amp bf16"]),
    (["--chunk", "2"], ["--cuda-graph", "--chunk 2"]),
    (["--model", "vgg11f_ws"], ["--cuda-graph", "vgg11f_ws"]),
    (["--model", "nf_resnet34", "--dropout", "0"], ["--cuda-graph", "nf_resnet34"]),
    (["--device", "cpu"], ["--cuda-graph", "--device cpu"]),
])
def test_what_the_captured_step_cannot_do_is_refused(tmp_path, capsys, extra, words):
    rc, out, err = run_cli(ARGV + ["--cuda-graph", "--out-dir", str(tmp_path / "run")] + extra, capsys)
    assert rc == 2 and out == ""
    assert err.startswith("ottt-train: error:") and all(w in err for w in words), err
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_a_cuda_device_it_says_so(tmp_path, capsys):
    rc, out, err = run_cli(ARGV + ["--cuda-graph", "--out-dir", str(tmp_path / "run")], capsys)
    assert rc == 2 and out == ""
    assert "--cuda-graph needs a CUDA device" in err and "cpu" in err


def test_without_the_option_the_result_says_so(tmp_path, capsys, monkeypatch):
    calls, _ = record_train_steps(monkeypatch)
    rc, out, err = run_cli(ARGV + ["--out-dir", str(tmp_path)], capsys)
    assert rc == 0, err
    assert calls and not any(c["cuda_graph"] for c in calls)
    assert last_json(out)["cuda_graph"] is False


@pytest.mark.skipif(not _backend.runs_on("cpu", "cpu"), reason="the step runs the compiled CPU kernels (_C)")
def test_a_run_with_it_trains_the_same_model(tmp_path, capsys, monkeypatch):
    from ottt_cuda.train import runner
    rc, _, err = run_cli(ARGV + ["--out-dir", str(tmp_path / "plain")], capsys)
    assert rc == 0, err

    # On this CPU: the device checks lifted, the fixed-buffer step run eagerly instead of captured.
    pick, check, train = runner.pick_device, _graph.check_request, _graph.train
    monkeypatch.setattr(runner, "pick_device", lambda cfg, d: pick(dict(cfg, cuda_graph=False), d))
    monkeypatch.setattr(_graph, "check_request", lambda model, x, *a: check(model, _OnCuda(), *a))
    built = []
    monkeypatch.setattr(_graph, "train", lambda *a, capture: built.append(1) or train(*a, capture=False))
    calls, _ = record_train_steps(monkeypatch)
    rc, out, err = run_cli(ARGV + ["--cuda-graph", "--out-dir", str(tmp_path / "graph")], capsys)
    assert rc == 0, err
    assert len(calls) == 3 and all(c["cuda_graph"] is True for c in calls)
    assert len(built) == 3  # every step went through the fixed-buffer step
    assert last_json(out)["cuda_graph"] is True
    plain, graph = trained_model(tmp_path / "plain"), trained_model(tmp_path / "graph")
    assert plain.keys() == graph.keys()
    for k, v in plain.items():
        torch.testing.assert_close(graph[k], v, rtol=1e-4, atol=1e-5, msg=k)


class _OnCuda:
    """Stands for x in check_request's device test only."""
    device = torch.device("cuda")


@pytest.mark.cuda
@cuda_only
def test_a_captured_run_trains_the_same_model_on_cuda(tmp_path, capsys, graph_replays):
    replays = graph_replays
    argv = ARGV + ["--device", "cuda"]
    rc, _, err = run_cli(argv + ["--out-dir", str(tmp_path / "plain")], capsys)
    assert rc == 0, err
    assert replays[0] == 0
    rc, out, err = run_cli(argv + ["--cuda-graph", "--out-dir", str(tmp_path / "graph")], capsys)
    assert rc == 0, err
    assert replays[0] == 3 * 4  # 3 batches of T = 4 replayed steps (the synthetic recipe)
    assert last_json(out)["cuda_graph"] is True
    plain, graph = trained_model(tmp_path / "plain"), trained_model(tmp_path / "graph")
    for k, v in plain.items():
        torch.testing.assert_close(graph[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_help_names_the_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--cuda-graph" in capsys.readouterr().out
