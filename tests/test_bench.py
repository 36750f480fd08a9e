"""The main job (python -m ottt_cuda.bench): the peak of live tensor bytes read from
allocator events against allocation patterns counted by hand, the saved-bytes counter on
graphs whose saved tensors are known, BPTT's memory growing with T where OTTT_A's stays
flat (a small model), the table's ratios only against real figures, the timer's
interleaving, the presets and the CLI's outputs. No timing is asserted."""
import json
import math
import os
import statistics

import pytest
import torch
import torch.nn as tnn

import ottt_cuda.nn as onn
from ottt_cuda.bench import LiveBytes, SavedBytes, cli, memory, methods, report, sweep, timing

MiB = 1 << 20


# --- the peak of live tensor bytes, from allocator events -------------------------------------

def test_live_bytes_peak_is_the_largest_sum_of_tensors_alive_together():
    old = torch.empty(3 * MiB, dtype=torch.uint8)  # from before the session: its free is no event of it
    with LiveBytes("cpu") as lb:
        held = torch.empty(256 * 1024, dtype=torch.uint8)  # alive before and after the measured block
        with lb.measure():
            del old
            a = torch.empty(1 * MiB, dtype=torch.uint8)
            b = torch.empty(2 * MiB, dtype=torch.uint8)  # a + b alive: 3 MiB
            del a
            c = torch.empty(512 * 1024, dtype=torch.uint8)
            d = torch.empty(1 * MiB, dtype=torch.uint8)  # b + c + d alive: 3.5 MiB, the most at once
            del b, c, d
            e = torch.empty(3 * MiB, dtype=torch.uint8)  # alone: 3 MiB
            del e
    assert lb.before == 256 * 1024
    assert lb.peak == 2 * MiB + 512 * 1024 + 1 * MiB
    assert lb.peak_total == lb.before + lb.peak
    del held


def test_live_bytes_counts_the_temporary_of_an_expression():
    x = torch.ones(1000, 1000)  # 4 MB, before the session
    with LiveBytes("cpu") as lb:
        with lb.measure():
            y = torch.add(torch.mul(x, x), x)  # x * x (4 MB) alive while add writes its result (4 MB)
    assert lb.before == 0 and lb.peak == 2 * 4_000_000
    del y


def test_peak_over_window_ignores_frees_it_cannot_size_and_events_outside_the_window():
    events = [(1, "p", 100), (2, "q", 50),  # before the window: 150 alive
              (5, "old", -999),  # a block allocated before the events began: ignored
              (6, "p", -100), (7, "r", 300), (8, "s", 10), (9, "r", -300),
              (20, "t", 10_000)]  # after the window
    before, peak = memory.peak_over_window(events, start_ns=4, end_ns=10)
    assert before == 150 and peak == 50 + 300 + 10


def test_ottt_a_peak_flat_in_T_bptt_grows_by_at_least_its_first_layer_per_step(tiny_model):
    B = 16
    x, y = methods.make_input(tiny_model, B, "cpu")
    peak = {}
    for m in ("ottt_a", "bptt"):
        for T in (1, 2, 8):
            rec, _, _ = sweep.measure(m, tiny_model, T, x, y, torch.device("cpu"))
            peak[m, T] = rec["peak_mb"] * MiB
    # BPTT keeps every step's graph until its one backward: at least the first LIF's input
    # (B x 8 x 16 x 16 floats) per extra time step.
    first_layer = B * 8 * 16 * 16 * 4
    assert peak["bptt", 8] - peak["bptt", 1] >= 7 * first_layer
    # OTTT_A frees each step's graph in that step's backward: from T = 2 on, not even one more
    # first-layer activation.
    assert abs(peak["ottt_a", 8] - peak["ottt_a", 2]) < first_layer
    assert peak["ottt_a", 8] < peak["bptt", 8]


# --- the saved-bytes counter ---------------------------------------------------------------------

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
                          onn.Conv2d(8, 16, 3, padding=1), onn.LIF(), tnn.Flatten(1),
                          onn.Linear(16 * 8 * 8, num_classes))


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setitem(methods.MODELS, "tiny", (_tiny, (3, 16, 16), 10))
    return "tiny"


def test_ottt_saved_memory_flat_in_T_bptt_grows(tiny_model):
    x, y = methods.make_input(tiny_model, 4, "cpu")
    saved = {}
    for m, Ts in (("ottt_a", (1, 4, 8)), ("bptt", (1, 4)), ("ottt_a_chunk", (4, 8))):
        for T in Ts:
            rec, _, _ = sweep.measure(m, tiny_model, T, x, y, torch.device("cpu"))
            saved[m, T] = rec["saved_mb"]
            assert math.isfinite(rec["loss"]) and rec["peak_mb"] > 0
    assert saved["bptt", 4] > 2 * saved["bptt", 1]
    assert saved["ottt_a", 4] <= 1.05 * saved["ottt_a", 1]
    assert saved["ottt_a", 8] <= 1.05 * saved["ottt_a", 1]
    # chunked: grows up to K = 4 steps, then flat
    assert saved["ottt_a_chunk", 8] <= 1.05 * saved["ottt_a_chunk", 4]


# --- timing: interleaved rounds, apart from the measuring -------------------------------------

def test_interleaved_rounds_alternate_the_callables_and_report_the_median():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    out = timing.interleaved_rounds(fns, 3)
    assert calls == ["a", "b"] * 3
    assert all(len(r.seconds) == 3 and r.calls == [1, 1, 1] for r in out.values())
    assert out["a"].median == sorted(out["a"].seconds)[1]


def test_interleaved_rounds_drop_a_failing_callable_and_keep_the_others():
    n = {"bad": 0}

    def bad():
        n["bad"] += 1
        if n["bad"] == 2:
            raise RuntimeError("boom")

    errors = {}
    out = timing.interleaved_rounds({"ok": lambda: None, "bad": bad}, 3, errors=errors)
    assert len(out["ok"].seconds) == 3 and len(out["bad"].seconds) == 1 and n["bad"] == 2
    assert isinstance(errors["bad"], RuntimeError)
    with pytest.raises(ZeroDivisionError):  # without `errors`, the exception propagates
        timing.interleaved_rounds({"bad": lambda: 1 / 0}, 1)


def test_timed_steps_run_without_profiler_or_hooks_and_after_the_measured_ones(monkeypatch):
    seen = []

    def fake_build(method, model_name, device, seed=0, example=None):
        model = tnn.Linear(4, 2)

        def step(x, y, opt, T):
            out = model(x).sum()
            seen.append((method, torch.autograd._profiler_enabled()))
            out.backward()
            return out.detach()
        return model, step

    monkeypatch.setattr(methods, "build", fake_build)
    monkeypatch.setitem(methods.MODELS, "fake", (None, (4,), 2))
    recs = sweep.run_T("fake", 2, ["m1", "m2"], 3, "cpu", rounds=4)
    # per method: warm-up, the profiled step, the saved-bytes step; then 4 rounds of both, interleaved
    assert [p for m, p in seen if m == "m1"][:3] == [True, True, False]
    assert seen[6:] == [("m1", False), ("m2", False)] * 4
    for r in recs:
        assert r["error"] is None and r["rounds"] == 4 and len(r["iter_s_all"]) == 4
        assert r["iter_s"] == statistics.median(r["iter_s_all"])


# --- the table and the headline ----------------------------------------------------------------

def test_table_ratios():
    recs = [dict(method="bptt", T=1, iter_s=2.0, peak_mb=100.0, saved_mb=50.0),
            dict(method="ottt_a", T=1, iter_s=1.0, peak_mb=25.0, saved_mb=10.0)]
    lines = report.table(recs).splitlines()
    assert lines[-1] == "| ottt_a | 1 | 1000 | 25.0 | 10.0 | 0.50 | 0.25 | 0.20 |"


def _cells(table_text):
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table_text.splitlines()]
    return rows[0], rows[2:]


def test_no_ratio_against_a_near_zero_or_missing_figure():
    # the figures of the old RSS-based peaks: a bptt "peak" of 0.3 MB against 54.7 MB saved
    recs = [dict(method="bptt", T=1, iter_s=0.5, peak_mb=0.3, saved_mb=54.7),
            dict(method="bptt", T=2, iter_s=0.6, peak_mb=float("nan"), saved_mb=68.0),
            dict(method="ottt_a", T=1, iter_s=0.4, peak_mb=41.2, saved_mb=54.7),
            dict(method="ottt_a", T=2, iter_s=0.5, peak_mb=41.3, saved_mb=54.7)]
    header, rows = _cells(report.table(recs))
    by = {(r[0], r[1]): dict(zip(header, r)) for r in rows}
    assert by["ottt_a", "1"]["peak / bptt"] == "–" and by["ottt_a", "2"]["peak / bptt"] == "–"
    assert by["ottt_a", "1"]["saved / bptt"] == "1.00" and by["ottt_a", "2"]["saved / bptt"] == "0.80"
    assert by["ottt_a", "1"]["time / bptt"] == "0.80"
    assert "137" not in report.headline(recs)  # no 41.2 / 0.3 anywhere


def test_every_ratio_printed_by_a_run_has_a_real_denominator(tmp_path, capsys):
    js = tmp_path / "r.json"
    rc = cli.main(["--model", "r400", "--batch", "2", "--T", "1", "2", "--methods", "ottt_a", "bptt",
                   "--rounds", "1", "--threads", "1", "--json", str(js), "--no-plot"])
    assert rc == 0
    recs = json.loads(js.read_text())
    header, rows = _cells(next(block for block in capsys.readouterr().out.split("\n\n") if block.startswith("| method")))
    base = {r["T"]: r for r in recs if r["method"] == "bptt"}
    for row in rows:
        cells = dict(zip(header, row))
        for col, key in (("time / bptt", "iter_s"), ("peak / bptt", "peak_mb"), ("saved / bptt", "saved_mb")):
            if cells[col] != "–":
                denominator = base[int(cells["T"])][key]
                assert denominator >= (report.MIN_S if key == "iter_s" else report.MIN_MB), (col, cells)


def test_headline_says_what_the_records_show_and_where_ottt_is_slower():
    recs = [dict(method="ottt_a", T=1, iter_s=1.2, peak_mb=90.0, saved_mb=50.0),
            dict(method="ottt_a", T=8, iter_s=4.0, peak_mb=96.0, saved_mb=50.0),
            dict(method="bptt", T=1, iter_s=1.0, peak_mb=95.0, saved_mb=50.0),
            dict(method="bptt", T=8, iter_s=5.0, peak_mb=160.0, saved_mb=200.0),
            dict(method="sj_ottt", T=8, iter_s=8.0, peak_mb=120.0, saved_mb=60.0),
            dict(method="sj_bptt", T=8, iter_s=None, peak_mb=None, saved_mb=None, error="boom")]
    assert report.headline(recs, "Measured: here.").splitlines() == [
        "Measured: here.",
        "ottt_a: peak 90.0 MB at T=1 -> 96.0 MB at T=8 (+7%)",
        "ottt_a: saved for backward 50.0 MB at T=1 -> 50.0 MB at T=8 (+0%)",
        "bptt: peak 95.0 MB at T=1 -> 160.0 MB at T=8 (+68%)",
        "bptt: saved for backward 50.0 MB at T=1 -> 200.0 MB at T=8 (+300%)",
        "ottt_a vs BPTT at T = 1 / 8: 1.20 / 0.80x the time per training step (slower at T=1 (1.20x)); "
        "0.95 / 0.60x the peak memory",
        "ottt_a vs SpikingJelly's OTTT at T = 8: 0.50x the time per training step (faster at every T measured); "
        "0.80x the peak memory",
    ]


# --- presets and the CLI -----------------------------------------------------------------------

def test_quick_default_is_the_headline_workload():
    args = cli.parse_args([])
    # the paper's model, BPTT against OTTT over a factor 8 in T, on a batch no larger than --full's
    assert args.preset == "quick" and args.model == "vgg11_ws"
    assert {"ottt_a", "bptt"} <= set(args.methods) and len(args.methods) <= 3
    assert min(args.T) == 1 and max(args.T) >= 8 and len(args.T) <= 4
    assert args.batch <= cli.parse_args(["--full"]).batch and args.rounds >= 3
    assert ("sj_ottt" in args.methods) == methods.spikingjelly_available()
    assert args.plot == "ottt_bench_quick_cpu.png"


def test_full_is_the_paper_sweep_with_every_method():
    args = cli.parse_args(["--full"])
    assert args.model == "vgg11_ws" and args.T == [1, 2, 4, 8, 16] and args.batch == 16 and args.rounds == 3
    assert args.methods == methods.available_methods("vgg11_ws")
    assert {"ottt_a", "ottt_o", "ottt_a_chunk", "sltt", "bptt"} <= set(args.methods)


def test_explicit_options_override_the_preset():
    args = cli.parse_args(["--full", "--batch", "2", "--T", "5", "3", "--methods", "sltt", "--iters", "2",
                           "--no-plot"])
    assert (args.batch, args.T, args.methods, args.rounds, args.plot) == (2, [3, 5], ["sltt"], 2, None)


def test_gpu_suite_command_parses_and_drops_missing_peers(monkeypatch, capsys):
    """The GPU machine has no SpikingJelly: its sj_* rows are skipped with a message, not an error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(methods, "spikingjelly_available", lambda: False)
    args = cli.parse_args(["--device", "cuda", "--model", "vgg11_ws", "--batch", "128", "--T", "1", "6", "16", "32",
                           "--iters", "2", "--timeout", "45", "--methods", "ottt_a", "ottt_o", "sltt", "bptt",
                           "sj_ottt", "sj_bptt", "--json", "x.json", "--plot", "x.png"])
    assert args.methods == ["ottt_a", "ottt_o", "sltt", "bptt"]
    assert (args.batch, args.T, args.rounds, args.timeout, args.json, args.plot) == (
        128, [1, 6, 16, 32], 2, 45, "x.json", "x.png")
    assert "skipping sj_ottt sj_bptt: SpikingJelly is not installed" in capsys.readouterr().err


def test_nothing_left_to_run_is_an_error_naming_methods(monkeypatch, capsys):
    monkeypatch.setattr(methods, "spikingjelly_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--methods", "sj_ottt"])
    assert e.value.code == 2
    assert "--methods sj_ottt: none can run here" in capsys.readouterr().err


@pytest.mark.parametrize("argv,name", [(["--batch", "0"], "--batch"), (["--T", "1", "-2"], "--T"),
                                       (["--rounds", "x"], "--rounds"), (["--timeout", "0"], "--timeout")])
def test_bad_options_name_the_option(argv, name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(argv)
    assert e.value.code == 2
    assert name in capsys.readouterr().err


def test_run_prints_table_legend_headline_writes_json_and_png_and_leaves_malloc_alone(tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(k, raising=False)
    js = tmp_path / "r.json"
    md = tmp_path / "r.md"
    rc = cli.main(["--model", "r400", "--batch", "2", "--T", "1", "2", "--methods", "ottt_a", "bptt", "--rounds",
                   "2", "--threads", "1", "--json", str(js), "--md", str(md)])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "| method | T | ms/step | peak MB | saved MB | time / bptt | peak / bptt | saved / bptt |" in out
    assert "peak MB: the most tensor bytes alive at once during one step" in out
    assert "Measured: r400, batch 2," in out and "1 CPU thread(s)" in out and "median of 2 interleaved" in out
    assert "ottt_a: peak " in out and "ottt_a vs BPTT at T = 1 / 2:" in out
    assert "python -m ottt_cuda.bench --full" in err and "total elapsed:" in err
    assert not any(k.startswith("MALLOC_") for k in os.environ)
    recs = json.loads(js.read_text())
    assert {(r["method"], r["T"]) for r in recs} == {(m, t) for m in ("ottt_a", "bptt") for t in (1, 2)}
    for r in recs:
        assert set(report.RECORD_KEYS) <= set(r) and r["error"] is None
        assert r["iter_s"] > 0 and r["saved_mb"] > 0 and r["peak_mb"] > 0 and len(r["iter_s_all"]) == 2
        assert r["threads"] == 1 and r["meta"]["threads"] == 1 and r["meta"]["rounds"] == 2
        assert "torch" in r["meta"] and "machine" in r["meta"] and "--rounds 2" in r["meta"]["command"]
    png = tmp_path / "ottt_bench_quick_cpu.png"
    assert str(png) in err and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = md.read_text()
    assert "Command: `python -m ottt_cuda.bench --model r400" in page and "1 torch thread(s)" in page
    assert "| ottt_a | 2 |" in page and "![memory and time vs T](ottt_bench_quick_cpu.png)" in page


def test_a_failing_method_is_reported_and_the_others_measured(monkeypatch, capsys):
    real = methods.build

    def build(method, *a, **k):
        if method == "bptt":
            raise RuntimeError("no bptt today")
        return real(method, *a, **k)

    monkeypatch.setattr(methods, "build", build)
    rc = cli.main(["--model", "r400", "--batch", "2", "--T", "1", "--methods", "ottt_a", "bptt", "--rounds", "1",
                   "--no-plot"])
    out = capsys.readouterr().out
    assert rc == 0 and "| bptt | 1 | failed: RuntimeError: no bptt today |" in out and "| ottt_a | 1 |" in out


def test_mlp784_is_the_784_400_10_net_and_its_spikingjelly_peer_has_its_weights():
    m = methods.MODELS["mlp784"][0](10)
    assert [tuple(p.shape) for p in m.parameters()] == [(400, 784), (400,), (10, 400), (10,)]
    if not methods.spikingjelly_available():
        pytest.skip("SpikingJelly is not installed")
    assert methods.available_methods("mlp784")[-1] == "sj_ottt"
    ours, _ = methods.build("ottt_a", "mlp784", "cpu", seed=3)
    peer, _ = methods.build("sj_ottt", "mlp784", "cpu", seed=3)
    for (n, p), (n2, q) in zip(ours.state_dict().items(), peer.state_dict().items()):
        assert n == n2 and torch.equal(p, q)


# --- SpikingJelly's memory optimizer (sj_bptt_memopt): exact BPTT, checked before it is timed ---

def _needs_memopt():
    if not methods.memopt_available():
        pytest.skip("SpikingJelly with activation_based.memopt is not installed")


def test_sj_bptt_memopt_is_checked_against_sj_bptt_then_measured():
    _needs_memopt()
    x, y = methods.make_input("vgg11_ws", 1, "cpu")
    rec, _, _ = sweep.measure("sj_bptt_memopt", "vgg11_ws", 2, x, y, torch.device("cpu"))
    check = rec["check"]
    assert check["reference"] == "sj_bptt" and check["passed"] is True
    assert 0 <= check["max_rel_err"] <= check["rtol"] == methods.GRAD_RTOL
    assert rec["peak_mb"] > 0 and rec["saved_mb"] > 0
    plain, _, _ = sweep.measure("sj_bptt", "vgg11_ws", 2, x, y, torch.device("cpu"))
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
    (rec,) = sweep.run_T("vgg11_ws", 2, ["sj_bptt_memopt"], 1, "cpu", rounds=1)
    assert rec["iter_s"] is None and rec["peak_mb"] is None and rec["saved_mb"] is None
    assert "GradientMismatch" in rec["error"] and "differ from sj_bptt's" in rec["error"]
    assert len(calls) == 1  # the gradient check's step only: no warm-up, no measured or timed step


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
