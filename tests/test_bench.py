"""The memory-vs-BPTT benchmark (ottt_cuda.bench): the saved-bytes counter on
graphs whose saved tensors are known, OTTT's flat saved memory against BPTT's
growth in T (deterministic), the quick and full workloads, and the CLI's
outputs. No timing is asserted."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as tnn

import ottt_cuda.nn as onn
from ottt_cuda.bench import SavedBytes, cli, launch, methods, report, worker

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


def test_headline_says_what_the_records_show():
    recs = [dict(method="ottt_a", T=1, iter_s=1.0, saved_mb=50.0), dict(method="ottt_a", T=8, iter_s=4.0, saved_mb=50.0),
            dict(method="bptt", T=1, iter_s=1.0, saved_mb=50.0), dict(method="bptt", T=8, iter_s=5.0, saved_mb=200.0),
            dict(method="sj_ottt", T=8, iter_s=8.0, saved_mb=60.0),
            dict(method="sj_bptt", T=8, iter_s=None, saved_mb=None, error="boom")]
    assert report.headline(recs).splitlines() == [
        "ottt_a: memory saved for backward 50.0 MB at T=1 -> 50.0 MB at T=8 (+0%)",
        "bptt: memory saved for backward 50.0 MB at T=1 -> 200.0 MB at T=8 (+300%)",
        "ottt_a vs BPTT at T=8: 0.25x the memory, 0.80x the time per training step",
        "ottt_a vs SpikingJelly's OTTT at T=8: 0.83x the memory, 0.50x the time per training step",
    ]


def test_quick_default_is_the_headline_workload():
    args = cli.parse_args([])
    # the paper's model, BPTT against OTTT over at least a factor 8 in T, on a batch smaller than --full's
    assert args.preset == "quick" and args.model == "vgg11_ws"
    assert {"ottt_a", "bptt"} <= set(args.methods) and len(args.methods) <= 3
    assert min(args.T) == 1 and max(args.T) >= 8 and len(args.T) <= 4
    assert args.batch < cli.parse_args(["--full"]).batch
    assert ("sj_ottt" in args.methods) == methods.spikingjelly_available()
    assert args.plot == "ottt_bench_quick_cpu.png"


def test_full_is_the_paper_sweep_with_every_method():
    args = cli.parse_args(["--full"])
    assert args.model == "vgg11_ws" and args.T == [1, 2, 4, 8, 16] and args.batch == 16 and args.iters == 3
    assert args.methods == methods.available_methods("vgg11_ws")
    assert {"ottt_a", "ottt_o", "ottt_a_chunk", "sltt", "bptt"} <= set(args.methods)


def test_explicit_options_override_the_preset():
    args = cli.parse_args(["--full", "--batch", "2", "--T", "3", "5", "--methods", "sltt", "--iters", "2",
                           "--no-plot"])
    assert (args.batch, args.T, args.methods, args.iters, args.plot) == (2, [3, 5], ["sltt"], 2, None)


def test_gpu_suite_command_parses_and_drops_missing_peers(monkeypatch, capsys):
    """The GPU machine has no SpikingJelly: its sj_* rows are skipped with a message, not an error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(methods, "spikingjelly_available", lambda: False)
    args = cli.parse_args(["--device", "cuda", "--model", "vgg11_ws", "--batch", "128", "--T", "1", "6", "16", "32",
                           "--methods", "ottt_a", "ottt_o", "sltt", "bptt", "sj_ottt", "sj_bptt",
                           "--json", "x.json", "--plot", "x.png"])
    assert args.methods == ["ottt_a", "ottt_o", "sltt", "bptt"]
    assert (args.batch, args.T, args.json, args.plot) == (128, [1, 6, 16, 32], "x.json", "x.png")
    assert "skipping sj_ottt sj_bptt: SpikingJelly is not installed" in capsys.readouterr().err


def test_nothing_left_to_run_is_an_error_naming_methods(monkeypatch, capsys):
    monkeypatch.setattr(methods, "spikingjelly_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--methods", "sj_ottt"])
    assert e.value.code == 2
    assert "--methods sj_ottt: none can run here" in capsys.readouterr().err


@pytest.mark.parametrize("argv,name", [(["--batch", "0"], "--batch"), (["--T", "1", "-2"], "--T"),
                                       (["--iters", "x"], "--iters"), (["--timeout", "0"], "--timeout")])
def test_bad_options_name_the_option(argv, name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(argv)
    assert e.value.code == 2
    assert name in capsys.readouterr().err


def test_default_run_prints_headline_elapsed_and_full_hint_and_writes_png(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--model", "r400", "--batch", "2", "--T", "1", "2", "--methods", "ottt_a", "bptt", "--iters", "1",
                   "--threads", "1", "--in-process"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "ottt_a: memory saved for backward" in out and "ottt_a vs BPTT at T=2:" in out
    assert "python -m ottt_cuda.bench --full" in err and "total elapsed:" in err
    png = tmp_path / "ottt_bench_quick_cpu.png"
    assert str(png) in err and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forked_worker_matches_the_in_process_record_and_reports_errors():
    config = dict(method="ottt_a", T=2, batch=2, device="cpu", model="r400", iters=1, threads=1)
    forked = launch.run_config(config, timeout=300)
    assert forked.get("error") is None, forked.get("error")
    here = worker.run(config)
    # saved bytes are deterministic: the same in a forked child as here
    assert forked["saved_mb"] == here["saved_mb"] and forked["T"] == 2 and forked["peak_mb"] >= 0
    bad = launch.run_config(dict(config, model="no_such_model"), timeout=300)
    assert bad["saved_mb"] is None and "no_such_model" in bad["error"]


def test_worker_env_keeps_or_drops_the_tracking_malloc_settings(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "999")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    tracking = launch.worker_env()
    assert tracking["MALLOC_MMAP_THRESHOLD_"] == "999"  # a caller's own setting is kept
    assert tracking["MALLOC_TRIM_THRESHOLD_"] == "131072"
    default = launch.worker_env("default")
    assert "MALLOC_MMAP_THRESHOLD_" not in default and "MALLOC_TRIM_THRESHOLD_" not in default
    assert default["PYTHONPATH"].split(os.pathsep)[0] == tracking["PYTHONPATH"].split(os.pathsep)[0]


def test_default_malloc_runs_a_fresh_interpreter_without_peaks(monkeypatch):
    # --malloc default: a new interpreter (a forkserver child would inherit the tracking settings), step times,
    # saved bytes, and no peak (freed memory is reused there); the same saved bytes as a tracking run.
    calls = []
    monkeypatch.setattr(launch, "run_forked", lambda c, t: calls.append("forked") or {})
    original = launch.run_subprocess
    monkeypatch.setattr(launch, "run_subprocess", lambda c, t: calls.append("subprocess") or original(c, t))
    config = dict(method="ottt_a", T=2, batch=2, device="cpu", model="r400", iters=1, threads=1, malloc="default")
    rec = launch.run_config(config, timeout=300)
    assert calls == ["subprocess"] and rec.get("error") is None, rec.get("error")
    assert rec["iter_s"] > 0 and math.isnan(rec["peak_mb"]) and "not measured" in rec["peak_source"]
    assert rec["saved_mb"] == worker.run(dict(config, malloc="tracking"))["saved_mb"]
    table = report.table([dict(rec, method="bptt"), rec])
    assert "| ottt_a | 2 |" in table and " – | " in table  # the missing peak and its ratio print as a dash


def test_default_malloc_is_not_for_in_process_runs(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--malloc", "default", "--in-process"])
    assert e.value.code == 2 and "--malloc default runs each configuration in a fresh interpreter" in \
        capsys.readouterr().err


# --- SpikingJelly's memory optimizer (sj_bptt_memopt): exact BPTT, checked before it is timed ---

def _needs_memopt():
    if not methods.memopt_available():
        pytest.skip("SpikingJelly with activation_based.memopt is not installed")


def test_sj_bptt_memopt_record_is_checked_against_sj_bptt_then_timed():
    _needs_memopt()
    config = dict(method="sj_bptt_memopt", T=2, batch=1, device="cpu", model="vgg11_ws", iters=1, threads=1)
    rec = worker.run(config)
    check = rec["check"]
    assert check["reference"] == "sj_bptt" and check["passed"] is True
    assert 0 <= check["max_rel_err"] <= check["rtol"] == methods.GRAD_RTOL
    assert rec["iter_s"] > 0 and rec["peak_mb"] >= 0 and rec["saved_mb"] > 0 and len(rec["iter_s_all"]) == 1
    plain = worker.run(dict(config, method="sj_bptt"))
    assert plain["check"] is None
    assert rec["loss"] == pytest.approx(plain["loss"], rel=1e-6)  # same weights, same input
    # memopt took effect: checkpointed blocks keep (1-bit) inputs, not every activation
    assert rec["saved_mb"] < 0.5 * plain["saved_mb"]


def test_sj_bptt_memopt_with_a_perturbed_weight_fails_its_check_and_is_not_timed(monkeypatch):
    _needs_memopt()
    real_build = methods.build
    calls = []

    def perturbed_build(method, *args, **kwargs):
        model, step = real_build(method, *args, **kwargs)
        if method != "sj_bptt_memopt":
            return model, step
        with torch.no_grad():
            next(model.parameters()).mul_(1.01)  # the first conv's weight, 1% off

        def counted_step(*a):
            calls.append(1)
            return step(*a)
        return model, counted_step

    monkeypatch.setattr(methods, "build", perturbed_build)
    rec = cli._in_process(dict(method="sj_bptt_memopt", T=2, batch=1, device="cpu", model="vgg11_ws", iters=1,
                               threads=1))
    assert rec["iter_s"] is None and rec["peak_mb"] is None and rec["saved_mb"] is None
    assert "GradientMismatch" in rec["error"] and "differ from sj_bptt's" in rec["error"]
    assert len(calls) == 1  # the gradient check's step only: no warm-up, no timed step


def test_sj_bptt_memopt_is_in_full_not_in_quick():
    _needs_memopt()
    assert "sj_bptt_memopt" in cli.parse_args(["--full"]).methods
    assert "sj_bptt_memopt" not in cli.parse_args([]).methods


def test_sj_bptt_memopt_is_dropped_when_memopt_is_missing(monkeypatch, capsys):
    monkeypatch.setattr(methods, "spikingjelly_available", lambda: True)
    monkeypatch.setattr(methods, "memopt_available", lambda: False)
    assert "sj_bptt_memopt" not in methods.available_methods("vgg11_ws")
    assert {"sj_ottt", "sj_bptt"} <= set(methods.available_methods("vgg11_ws"))
    args = cli.parse_args(["--methods", "sj_bptt", "sj_bptt_memopt", "--no-plot"])
    assert args.methods == ["sj_bptt"]
    assert "skipping sj_bptt_memopt: it needs SpikingJelly >= 2.0 (spikingjelly.activation_based.memopt)" in capsys.readouterr().err


def test_memopt_level_is_1_on_cpu_4_on_cuda():
    # levels 2-4 search by measuring CUDA peak memory: they raise without CUDA
    assert methods.memopt_level("cpu") == 1 and methods.memopt_level("cuda") == 4
