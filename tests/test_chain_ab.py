"""benchmarks/chain_ab.py (the autograd-free step against autograd, interleaved in one process): the
correctness gate runs first and can fail, the summary is the median of the rounds, the ratios are
those medians' quotients. No timing is asserted."""
import os
import statistics
import sys

import pytest

from ottt_cuda import _backend

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import chain_ab  # noqa: E402

pytestmark = pytest.mark.skipif(not _backend.runs_on("cpu", "cpu"),
                                reason="the chain runs the compiled CPU kernels (ottt_cuda._C)")
ARGS = ["--batches", "1", "2", "--threads", "1", "--rounds", "3", "--target-s", "0.001"]


@pytest.mark.usefixtures("restore_threads")
def test_report_from_interleaved_rounds(tmp_path):
    md, js = tmp_path / "ab.md", tmp_path / "ab.json"
    assert chain_ab.main(["--models", "mlp784", "r400"] + ARGS + ["--md", str(md), "--json", str(js)]) == 0
    import json

    payload = json.loads(js.read_text())
    recs = payload["records"]
    assert [(r["model"], r["batch"]) for r in recs] == [("mlp784", 1), ("mlp784", 2), ("r400", 1), ("r400", 2)]
    text = md.read_text()
    for r in recs:
        assert r["check"]["chain_steps"] == r["T"] == 5 and r["check"]["grad_diff"] <= 1e-5
        assert len(r["autograd_ms"]) == len(r["chain_ms"]) == 3
        assert r["autograd_ms_median"] == statistics.median(r["autograd_ms"])
        assert r["speedup"] == r["autograd_ms_median"] / r["chain_ms_median"]
        assert r["round_ratios"] == [a / c for a, c in zip(r["autograd_ms"], r["chain_ms"])]
        assert f"| {r['model']} | ottt_a | {r['batch']} | 1 | {r['autograd_ms_median']:.3f} | " in text


@pytest.mark.usefixtures("restore_threads")
def test_ottt_o_rounds(tmp_path):
    # OTTT_O (an optimizer step per time step) through both paths, checked on the parameters after the
    # steps too.
    md, js = tmp_path / "ab.md", tmp_path / "ab.json"
    assert chain_ab.main(["--models", "r400", "--modes", "ottt_o"] + ARGS
                         + ["--md", str(md), "--json", str(js)]) == 0
    import json

    payload = json.loads(js.read_text())
    assert [(r["mode"], r["batch"]) for r in payload["records"]] == [("ottt_o", 1), ("ottt_o", 2)]
    assert all(r["check"]["chain_steps"] == 5 and r["check"]["grad_diff"] <= 1e-5 for r in payload["records"])
    text = md.read_text()
    assert "| r400 | ottt_o | 1 | 1 | " in text


def test_ottt_o_parameters_that_differ_stop_the_benchmark(monkeypatch):
    # A wrong OTTT_O chain step shows in the parameters after the optimizer steps as well as in the gradients.
    backward = chain_ab._chain.lif_backward
    monkeypatch.setattr(chain_ab._chain, "lif_backward", lambda saved, g: backward(saved, g) * 1.01)
    with pytest.raises(SystemExit, match="r400 ottt_o batch 1: the paths disagree"):
        chain_ab.main(["--models", "r400", "--modes", "ottt_o"] + ARGS)


def test_a_chain_that_does_not_run_stops_the_benchmark(monkeypatch):
    monkeypatch.setattr(chain_ab._chain, "plan", lambda model, x, **kw: None)  # every step through autograd
    with pytest.raises(SystemExit, match=r"chain did not run \(chain steps 0/5"):
        chain_ab.main(["--models", "mlp784"] + ARGS)


def test_bad_arguments_are_refused(capsys):
    for bad in (["--rounds", "0"], ["--batches", "0"], ["--target-s", "0"], ["--models", "vgg"], ["--modes", "bptt"]):
        with pytest.raises(SystemExit):
            chain_ab.parse_args(bad)


def test_gradients_that_differ_stop_the_benchmark(monkeypatch):
    backward = chain_ab._chain.lif_backward
    monkeypatch.setattr(chain_ab._chain, "lif_backward", lambda saved, g: backward(saved, g) * 1.01)
    with pytest.raises(SystemExit, match="the paths disagree"):
        chain_ab.main(["--models", "r400"] + ARGS)
