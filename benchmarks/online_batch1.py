"""The online regime: training at batch 1 and 8, one sample and one time step at a
time, where a step's cost is Python, dispatch and allocation rather than arithmetic.

Models and methods (the same weights and input for every method of a model), all
built by ottt_cuda.bench.methods:
- mlp784: 784-400-10 without the recurrent synapse (methods.mlp784) under ottt_a /
  ottt_o, and SpikingJelly's OTTTSequential(Flatten, Linear, OTTTLIFNode, Linear)
  as sj_ottt. T = 5, input 1x28x28 (Fashion-MNIST sized).
- r400: ottt_cuda.models.r400 (recurrent; SpikingJelly's OTTT layers cannot express
  it, so only ours). T = 5, input 1x28x28.
- vgg11_ws: the paper's VGG-11 sWS, T = 6, input 3x32x32; sj_ottt is SpikingJelly's
  spiking_vggws_ottt.

Correctness first: before timing, each model with a SpikingJelly peer runs T steps
of forward + per-step backward in both on the same weights and input; the outputs
at every step and the accumulated weight gradients must agree (recorded in
"checks"). Timing interleaves the methods round by round (A, B, C, A, B, C, ...;
ottt_cuda.bench.timing.interleaved_rounds) and reports the median over rounds of the
mean seconds per training step (one call = one sample batch through all T time
steps, with the optimizer step(s)).

Outside-kernel share (torch.profiler, CPU): kernel time = the summed SELF CPU time
of compute ops, i.e. every aten:: and ottt_cuda:: operator except views, reshapes,
allocation and composites that only dispatch (NON_COMPUTE_OPS), over profiled
training steps; share = 1 - kernel time per step / wall time of the same profiled
steps. It is what Python, autograd bookkeeping and allocation cost around the
arithmetic. An op's self time still holds its own dispatch (the share is lower
than the truth by that) and the profiler's own cost lands outside (higher by that).

    python benchmarks/online_batch1.py --json benchmarks/results/online_batch1_cpu.json \
        --md benchmarks/results/online_batch1_cpu.md --plot benchmarks/results/online_batch1_cpu.png
    python benchmarks/online_batch1.py --quick --json /tmp/q.json   # a small smoke run

Before/after: run this script in another checkout first (copy it into that
checkout's benchmarks/ so that it imports that ottt_cuda), then here with --before
OTHER.json: the report adds each case's samples/s in both and judges the targets
with the R400 baseline taken from OTHER.json. Both runs should come from the same
machine close in time (say so in --note).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402

import ottt_cuda  # noqa: E402
from ottt_cuda.bench import methods as bm  # noqa: E402
from ottt_cuda.bench.machine import command_line, machine  # noqa: E402
from ottt_cuda.bench.report import save_json  # noqa: E402
from ottt_cuda.bench.timing import interleaved_rounds  # noqa: E402
from ottt_cuda.training import step_loss  # noqa: E402

MODELS = {  # name -> (T, input shape, methods)
    "mlp784": (5, (1, 28, 28), ("ottt_a", "ottt_o", "sj_ottt")),
    "r400": (5, (1, 28, 28), ("ottt_a", "ottt_o")),
    "vgg11_ws": (6, (3, 32, 32), ("ottt_a", "ottt_o", "sj_ottt")),
}
PEER = "sj_ottt"
# Throughput goals of ottt_a in this regime (samples/s): vs SpikingJelly's OTTT, and R400 vs a --before run.
TARGETS = {"mlp784": ("x sj_ottt", 2.0), "vgg11_ws": ("x sj_ottt", 4.0), "r400": ("x today's samples/s", 3.0)}
# aten ops whose own (self) time is no arithmetic: views, reshapes, allocation,
# bookkeeping, and composites that only dispatch to the ops doing the work.
NON_COMPUTE_OPS = {
    "aten::" + n for n in (
        "empty", "empty_strided", "empty_like", "view", "as_strided", "reshape", "_reshape_alias", "_unsafe_view",
        "detach", "detach_", "t", "transpose", "expand", "expand_as", "unsqueeze", "squeeze", "permute", "select",
        "slice", "alias", "resize_", "lift_fresh", "result_type", "numpy_T", "_local_scalar_dense", "item",
        "set_", "is_nonzero", "size", "stride", "contiguous", "flatten", "unflatten", "view_as",
        "_has_compatible_shallow_copy_type", "is_same_size", "broadcast_tensors", "split", "chunk", "unbind",
        "to", "zeros", "zeros_like", "ones_like", "new_zeros", "new_empty", "new_empty_strided", "full",
        "scalar_tensor", "linear", "matmul", "conv2d", "convolution", "_convolution", "cross_entropy_loss",
        "nll_loss", "nll_loss_nd", "log_softmax", "dropout")
}


# ----------------------------------------------------------------------------- models

def build(model_name, method, seed=0):
    """(model, step(x, y, opt, T)) with the same initial weights for every method of a model."""
    return bm.build(method, model_name, "cpu", seed=seed)


def make_input(model_name, batch, seed=0):
    return bm.make_input(model_name, batch, "cpu", seed=seed)


# ------------------------------------------------------------------------ correctness

def _forward_backward(model, reset, x, y, T):
    """Outputs of T steps, each step's loss back-propagated at once (OTTT_A), and the grads."""
    reset(model)
    model.zero_grad(set_to_none=True)
    outs = []
    for _ in range(T):
        out = model(x)
        step_loss(out, y, T, bm.LOSS_ALPHA).backward()
        outs.append(out.detach())
    return outs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def check_against_peer(model_name, batch, tol=1e-9):
    """Forward outputs at every step and accumulated weight gradients, ours vs SpikingJelly's OTTT, in
    float64. Not in float32: two correct implementations that round differently (here the sWS weight,
    2e-8 apart) can put a membrane on either side of the threshold. On VGG-11 at batch 8 one spike of
    features.22 flips at the 4th step: the output stays identical (no spike of the last LIF changes),
    but the gradients of the layers behind it move by up to 100% of their largest element; a float32
    comparison then passes only for implementations that round in the same order."""
    from spikingjelly.activation_based import functional

    T = MODELS[model_name][0]
    x, y = make_input(model_name, batch, seed=1)
    x = x.double()
    ours, _ = build(model_name, "ottt_a")
    peer, _ = build(model_name, PEER)
    ours.double().train(), peer.double().train()
    o_out, o_grad = _forward_backward(ours, ottt_cuda.reset, x, y, T)
    p_out, p_grad = _forward_backward(peer, functional.reset_net, x, y, T)
    scale = max(float(torch.stack([o.abs().max() for o in p_out]).max()), 1e-12)
    out_diff = max(float((a - b).abs().max()) for a, b in zip(o_out, p_out)) / scale
    missing = sorted(set(p_grad) ^ set(o_grad))
    grad_diff = max((float((o_grad[n] - g).abs().max()) / max(float(g.abs().max()), 1e-12)
                     for n, g in p_grad.items() if n in o_grad), default=float("inf"))
    passed = out_diff <= tol and grad_diff <= tol * 10 and not missing
    return {"model": model_name, "batch": batch, "against": PEER, "T": T,
            "max_rel_output_diff": out_diff, "max_rel_grad_diff": grad_diff,
            "params_only_in_one": missing, "tolerance_output": tol, "tolerance_grad": tol * 10,
            "passed": bool(passed)}


# ----------------------------------------------------------------------------- timing

def _is_compute(e):
    # Only C++ operators count: aten and ottt_cuda's kernels. Autograd nodes, Python
    # autograd Functions and Python-implemented custom ops are overhead; what they
    # call in aten is counted by itself (self time, so nothing twice).
    return e.name.split("::")[0] in ("aten", "ottt_cuda") and e.name not in NON_COMPUTE_OPS


def kernel_seconds_per_call(step, x, y, opt, T, calls):
    """Summed self CPU time of compute ops per call (see the module docstring), and the profiled wall."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            step(x, y, opt, T)
        wall = time.perf_counter() - t0
    us = sum(e.self_cpu_time_total for e in prof.events() if _is_compute(e))
    return us * 1e-6 / calls, wall / calls


def bench_case(model_name, batch, threads, args):
    torch.set_num_threads(threads)
    T = MODELS[model_name][0]
    methods = [m for m in MODELS[model_name][2] if m != PEER or bm.spikingjelly_available()]
    x, y = make_input(model_name, batch)
    runs = {}
    for m in methods:
        model, step = build(model_name, m)
        model.train()
        opt = bm.make_optimizer(model)
        for _ in range(args.warmup):
            step(x, y, opt, T)
        runs[m] = (step, opt)
    timed = interleaved_rounds({m: (lambda step=step, opt=opt: step(x, y, opt, T)) for m, (step, opt) in runs.items()},
                               args.rounds, target_s=args.target_s, max_calls=args.max_calls)
    out = []
    for m in methods:
        step, opt = runs[m]
        secs, calls, wall = timed[m].seconds, timed[m].calls, timed[m].median
        kern, prof_wall = kernel_seconds_per_call(step, x, y, opt, T, args.profile_calls)
        out.append({"model": model_name, "batch": batch, "threads": threads, "method": m, "T": T,
                    "s_per_call_rounds": secs, "calls_per_round": calls, "s_per_call": wall,
                    "samples_per_s": batch / wall, "ms_per_time_step": wall / T * 1e3,
                    "kernel_ms_per_call": kern * 1e3, "profiled_wall_ms_per_call": prof_wall * 1e3,
                    # Kernel and wall from the same profiled calls: on a shared machine the
                    # load differs between the timed rounds and the profiled calls.
                    "outside_kernel_share": max(0.0, 1.0 - kern / prof_wall)})
    peer = next((r for r in out if r["method"] == PEER), None)
    for r in out:
        r["ratio_vs_sj_ottt"] = peer["s_per_call"] / r["s_per_call"] if peer else None
    return out


# ---------------------------------------------------------------------------- reports

def _key(r):
    return (r["model"], r["batch"], r["threads"], r["method"])


def baseline_vs_targets(results, before=None):
    """ottt_a against TARGETS, per (model, batch, threads). R400's target is
    relative to the samples/s of `before` (a list of results from an earlier run); without it
    the run itself is the baseline (ratio 1)."""
    old = {_key(r): r for r in before or []}
    rows = []
    for r in results:
        if r["method"] != "ottt_a" or r["model"] not in TARGETS:
            continue
        what, goal = TARGETS[r["model"]]
        if r["model"] == "r400":
            base = old.get(_key(r))
            today = r["samples_per_s"] / base["samples_per_s"] if base else 1.0
        else:
            today = r["ratio_vs_sj_ottt"]
        rows.append({"model": r["model"], "batch": r["batch"], "threads": r["threads"], "metric": what,
                     "today": today, "target": goal, "samples_per_s": r["samples_per_s"],
                     "target_samples_per_s": (r["samples_per_s"] * goal / today) if today else None,
                     "met": bool(today is not None and today >= goal)})
    return rows


def before_after(results, before):
    """Each case measured in both runs: samples/s before and after, and the speed-up."""
    old = {_key(r): r for r in before}
    rows = []
    for r in results:
        b = old.get(_key(r))
        if b is None:
            continue
        rows.append({"model": r["model"], "batch": r["batch"], "threads": r["threads"], "method": r["method"],
                     "before_samples_per_s": b["samples_per_s"], "after_samples_per_s": r["samples_per_s"],
                     "speedup": r["samples_per_s"] / b["samples_per_s"],
                     "before_ratio_vs_sj_ottt": b.get("ratio_vs_sj_ottt"),
                     "after_ratio_vs_sj_ottt": r["ratio_vs_sj_ottt"]})
    return rows


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def markdown(payload):
    meta = payload["meta"]
    mach = meta["machine"]
    lines = ["# Online regime (batch 1 and 8) on the CPU", "",
             f"Command: `{meta['command']}`  ", f"Machine: {mach['processor']}, "
             f"{mach['cpu_count']} cores, {mach['platform']}; torch {mach['torch']}, "
             f"SpikingJelly {mach['spikingjelly']}, ottt_cuda backend {mach['ottt_cuda_backend']}  ",
             f"Threads: {meta['threads']} (vgg11_ws: {meta['vgg_threads']}); rounds: {meta['rounds']} "
             "(methods interleaved, median of rounds), "
             f"~{meta['target_s']} s per measurement (at most {meta['max_calls']} calls).  ",
             f"Note: {meta['note']}", "",
             "## Correctness (before timing)", "",
             "| model | batch | vs | max rel. output diff | max rel. grad diff | passed |", "|---|---|---|---|---|---|"]
    for c in payload["checks"]:
        lines.append(f"| {c['model']} | {c['batch']} | {c['against']} | {c['max_rel_output_diff']:.2e} | "
                     f"{c['max_rel_grad_diff']:.2e} | {c['passed']} |")
    lines += ["", "## Throughput", "",
              "One call = one training step on a batch: T time steps (forward + backward each step) and the "
              "optimizer step(s). ms/time step = wall per call / T.", "",
              f"Outside-kernel share: {meta['outside_kernel_share_definition']}", "",
              "| model | batch | threads | method | samples/s | ms / time step | x sj_ottt | kernel ms / call | "
              "outside-kernel share |", "|---|---|---|---|---|---|---|---|---|"]
    for r in payload["results"]:
        lines.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {r['method']} | {r['samples_per_s']:.3g} | "
                     f"{r['ms_per_time_step']:.2f} | {_f(r['ratio_vs_sj_ottt'], '.2f')} | "
                     f"{r['kernel_ms_per_call']:.1f} | {r['outside_kernel_share']:.0%} |")
    if payload.get("before_after"):
        src = payload["before"]
        lines += ["", "## Before and after", "",
                  f"Before: `{src['command']}` (note: {src['note']})", "",
                  "| model | batch | threads | method | samples/s before | samples/s after | speed-up | "
                  "x sj_ottt before | x sj_ottt after |", "|---|---|---|---|---|---|---|---|---|"]
        for r in payload["before_after"]:
            lines.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {r['method']} | "
                         f"{r['before_samples_per_s']:.3g} | {r['after_samples_per_s']:.3g} | {r['speedup']:.2f} | "
                         f"{_f(r['before_ratio_vs_sj_ottt'], '.2f')} | {_f(r['after_ratio_vs_sj_ottt'], '.2f')} |")
    lines += ["", "## Against the targets (ottt_a)", "",
              ("R400's baseline: the --before run." if payload.get("before") else
               "No --before run: this run is R400's baseline."), "",
              "| model | batch | threads | metric | now | target | met | samples/s now | samples/s needed |",
              "|---|---|---|---|---|---|---|---|---|"]
    for b in payload["baseline_vs_targets"]:
        lines.append(f"| {b['model']} | {b['batch']} | {b['threads']} | {b['metric']} | {_f(b['today'], '.2f')} | "
                     f"{b['target']:.0f} | {'yes' if b['met'] else 'no'} | {b['samples_per_s']:.3g} | "
                     f"{_f(b['target_samples_per_s'], '.3g')} |")
    return "\n".join(lines) + "\n"


def plot(path, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in results if r["model"] == model]
        groups = list(dict.fromkeys((r["batch"], r["threads"]) for r in rs))
        meths = list(dict.fromkeys(r["method"] for r in rs))
        w = 0.8 / len(meths)
        for i, m in enumerate(meths):
            vals = [next((r["samples_per_s"] for r in rs if (r["batch"], r["threads"]) == g and r["method"] == m),
                         0) for g in groups]
            ax.bar([j + i * w for j in range(len(groups))], vals, w, label=m)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(groups))])
        ax.set_xticklabels([f"B={b}\n{t} thr" for b, t in groups])
        ax.set_yscale("log")
        ax.set_ylabel("samples / s")
        ax.set_title(f"{model} (T={MODELS[model][0]})")
        ax.legend(fontsize=8)
    fig.suptitle("Online training throughput on the CPU (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------------- cli

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Samples/s, ms per time step and the outside-kernel share of online "
                                            "training (ottt_a, ottt_o, SpikingJelly's OTTT) at batch 1 and 8.")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch intra-op threads (default 1 2)")
    p.add_argument("--vgg-threads", nargs="+", type=int,
                   help="thread counts for vgg11_ws (default: --threads); VGG steps are long on a small CPU")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--target-s", type=float, default=1.0, help="seconds per measurement (at least one call)")
    p.add_argument("--max-calls", type=int, default=200, help="calls per measurement at most")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per method first")
    p.add_argument("--profile-calls", type=int, default=3, help="profiled calls for the outside-kernel share")
    p.add_argument("--quick", action="store_true",
                   help="a small smoke run: mlp784 and r400 at batch 1, 1 thread, 2 rounds, short measurements")
    p.add_argument("--note", default="", help="recorded beside the results (e.g. the machine was shared)")
    p.add_argument("--before", help="JSON of an earlier run of this script (e.g. on the previous commit, same "
                                    "machine): adds before/after columns and is R400's baseline for the targets")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--md", help="write a markdown report here")
    p.add_argument("--plot", help="write a bar plot (png) here")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.threads = ["mlp784", "r400"], [1], [1]
        args.rounds, args.target_s, args.max_calls, args.warmup, args.profile_calls = 2, 0.05, 5, 1, 1
    if args.vgg_threads is None:
        args.vgg_threads = args.threads
    for name in ("batches", "threads", "vgg_threads"):
        if any(v < 1 for v in getattr(args, name)):
            p.error(f"--{name} values must be positive ints, got {getattr(args, name)}")
    for name in ("rounds", "max_calls", "profile_calls"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.target_s < 0:
        p.error("--warmup and --target-s must be >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    before = None
    if args.before:
        with open(args.before) as f:
            before = json.load(f)
    started = time.time()
    checks = []
    if bm.spikingjelly_available():
        for model in args.models:
            if PEER in MODELS[model][2]:
                for b in args.batches:
                    c = check_against_peer(model, b)
                    checks.append(c)
                    print(f"check {model} B={b}: output {c['max_rel_output_diff']:.1e} grad "
                          f"{c['max_rel_grad_diff']:.1e} passed={c['passed']}", flush=True)
    if not all(c["passed"] for c in checks):
        print("correctness check failed: not timing", file=sys.stderr)
    results = []
    if all(c["passed"] for c in checks):
        for threads in sorted(set(args.threads) | set(args.vgg_threads)):
            for model in args.models:
                if threads not in (args.vgg_threads if model == "vgg11_ws" else args.threads):
                    continue
                for b in args.batches:
                    for r in bench_case(model, b, threads, args):
                        results.append(r)
                        print(f"{model:9s} B={b} thr={threads} {r['method']:8s} {r['samples_per_s']:9.1f} samples/s "
                              f"{r['ms_per_time_step']:8.2f} ms/time step  x sj {_f(r['ratio_vs_sj_ottt'], '.2f')}"
                              f"  outside kernels {r['outside_kernel_share']:.0%}", flush=True)
    torch.set_num_threads(args.threads[0])
    payload = {
        "meta": {"command": command_line(), "machine": machine("cpu"), "threads": args.threads,
                 "vgg_threads": args.vgg_threads,
                 "rounds": args.rounds, "target_s": args.target_s, "max_calls": args.max_calls,
                 "warmup": args.warmup, "profile_calls": args.profile_calls, "quick": args.quick,
                 "note": args.note, "elapsed_s": time.time() - started,
                 "outside_kernel_share_definition": (
                     "1 - (summed self CPU time of compute ops per call, from torch.profiler over "
                     "--profile-calls calls) / (wall per call of the same profiled calls); compute ops = "
                     "every aten:: and ottt_cuda:: operator except views, reshapes, allocation and composites "
                     "that only dispatch (autograd nodes, Python autograd Functions and Python custom ops are "
                     "outside); an op's self "
                     "time includes its own dispatch (lowers the share), the profiler's own cost is outside "
                     "(raises it)")},
        "checks": checks,
        "correct": all(c["passed"] for c in checks),
        "results": results,
        "baseline_vs_targets": baseline_vs_targets(results, before["results"] if before else None),
    }
    if before:
        payload["before"] = {"path": args.before, "command": before["meta"]["command"],
                             "note": before["meta"]["note"], "results": before["results"]}
        payload["before_after"] = before_after(results, before["results"])
    if args.json:
        save_json(args.json, payload)
    if args.md:
        with open(args.md, "w") as f:
            f.write(markdown(payload))
    if args.plot and results:
        plot(args.plot, results)
    return 0 if payload["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
