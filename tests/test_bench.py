"""The memory-vs-BPTT benchmark (ottt_cuda.bench): the saved-bytes counter on
graphs whose saved tensors are known, OTTT's flat saved memory against BPTT's
growth in T (deterministic), and the CLI's outputs. No timing is asserted."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as tnn

import ottt_cuda.nn as onn
from ottt_cuda.bench import SavedBytes, cli, methods, report, worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _SaveThese(torch.autograd.Function):
    """Saves x, a view of x and y: storages x and y, each counted once."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, x[:10], y)
        return x * 2

    @staticmethod
    def backward(ctx, g):
        x, _, y = ctx.saved_tensors
        return g * 2, None


def test_counts_each_storage_once_and_uncounts_freed_graphs():
    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)  # 8000 bytes
    y = torch.randn(300)  # 1200 bytes
    with SavedBytes() as sb:
        out = _SaveThese.apply(x, y)
        assert sb.live == 8000 + 1200
        out.sum().backward()
        assert sb.live == 0  # backward freed the saved variables
    assert sb.peak_saved == sb.peak == 9200
    assert sb.packed == 3


def test_sequential_graphs_peak_at_one_graph_retained_graphs_add_up():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(32, 64)
    # sin saves its input (a new storage per step): 32*64*4 = 8192 bytes each
    with SavedBytes() as online:  # OTTT-like: backward after every step
        for _ in range(4):
            torch.sin(x @ w).sum().backward()
    with SavedBytes() as whole:  # BPTT-like: one graph over all steps
        sum(torch.sin(x @ w).sum() for _ in range(4)).backward()
    # mm(x, w) saves only x (w's gradient needs x; x needs no gradient): one storage shared by every step
    assert online.peak_saved == 8192 + 8192
    assert whole.peak_saved == 8192 + 4 * 8192


def test_parameters_of_the_model_are_not_counted_state_is():
    lin = onn.Linear(64, 32)
    x = torch.randn(8, 64)
    with SavedBytes(lin) as sb:
        lin(x).sum().backward()
    # saved: the trace a_hat (8*64*4 bytes) and the weight (a parameter: excluded);
    # state: the same a_hat, counted once while it is also saved, as state alone after backward.
    assert sb.peak == 8 * 64 * 4
    assert sb.peak_state == 8 * 64 * 4
    assert sb.live == 0


def _tiny(num_classes):
    return tnn.Sequential(onn.Conv2d(3, 8, 3, padding=1, trace=False), onn.LIF(), onn.Scale(2.0), tnn.AvgPool2d(2),
                          onn.Conv2d(8, 16, 3, padding=1), onn.LIF(), tnn.Flatten(1), onn.Linear(16 * 8 * 8,
                                                                                                 num_classes))


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setitem(methods.MODELS, "tiny", (_tiny, (3, 16, 16), 10, False))
    return "tiny"


def test_ottt_saved_memory_flat_in_T_bptt_grows(tiny_model):
    saved = {}
    for m, Ts in (("ottt_a", (1, 4, 8)), ("bptt", (1, 4)), ("ottt_a_chunk", (4, 8))):
        for T in Ts:
            rec = worker.run(dict(method=m, T=T, batch=4, device="cpu", model=tiny_model, iters=1, threads=1))
            saved[m, T] = rec["saved_mb"]
            assert rec["loss"] == rec["loss"] and rec["iter_s"] > 0 and rec["peak_mb"] >= 0
    assert saved["bptt", 4] > 2 * saved["bptt", 1]
    assert saved["ottt_a", 4] <= 1.05 * saved["ottt_a", 1]
    assert saved["ottt_a", 8] <= 1.05 * saved["ottt_a", 1]
    # chunked: grows up to K = 4 steps, then flat
    assert saved["ottt_a_chunk", 8] <= 1.05 * saved["ottt_a_chunk", 4]


def test_cli_in_process_writes_json_and_png(tmp_path, capsys):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = cli.main(["--model", "r400", "--batch", "2", "--T", "1", "2", "--methods", "ottt_a", "bptt", "--iters",
                   "1", "--threads", "1", "--in-process", "--json", str(js), "--plot", str(png)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| method | T | ms/step | peak MB | saved MB | time / bptt |" in out
    recs = json.loads(js.read_text())
    assert isinstance(recs, list) and len(recs) == 4
    for r in recs:
        assert set(report.RECORD_KEYS) <= set(r)
        assert r["device"] == "cpu" and r["model"] == "r400" and r["batch"] == 2
        assert r["iter_s"] > 0 and r["saved_mb"] > 0 and r["peak_mb"] is not None
        assert "torch" in r["meta"] and "machine" in r["meta"]
    assert {(r["method"], r["T"]) for r in recs} == {(m, t) for m in ("ottt_a", "bptt") for t in (1, 2)}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wrapper_runs_a_configuration_in_a_subprocess(tmp_path):
    js = tmp_path / "w.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "memory_vs_bptt.py"), "--model", "r400",
                           "--batch", "2", "--T", "1", "--methods", "ottt_a", "--iters", "1", "--threads", "1", "--json", str(js)],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = json.loads(js.read_text())
    assert rec["method"] == "ottt_a" and rec["T"] == 1 and rec["saved_mb"] > 0
    assert "| ottt_a | 1 |" in proc.stdout


def test_table_ratios():
    recs = [dict(method="bptt", T=1, iter_s=2.0, peak_mb=100.0, saved_mb=50.0),
            dict(method="ottt_a", T=1, iter_s=1.0, peak_mb=25.0, saved_mb=10.0)]
    lines = report.table(recs).splitlines()
    assert lines[-1] == "| ottt_a | 1 | 1000 | 25.0 | 10.0 | 0.50 | 0.25 | 0.20 |"
