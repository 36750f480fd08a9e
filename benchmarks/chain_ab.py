"""The autograd-free OTTT_A / OTTT_O step (ottt_cuda/nn/_chain.py) against the autograd path it replaces,
side by side in ONE process: the same model, optimizer and input, `nn._chain.enabled` switched
on and off, the two interleaved round by round (the order alternating each round) so that a
shared machine's slow seconds fall on both alike; the report gives each path's median ms per
training step (T time steps and the optimizer step), the ratio of the medians and every round's
own ratio. Before timing, one train_step per path on two copies of the model must give the same
loss and gradients (and, under OTTT_O, which steps the optimizer at every time step, the same
parameters after it), and the chain path must have run (else the comparison is of nothing).

    python benchmarks/chain_ab.py --models r400 mlp784 --batches 1 8 128 --threads 1 2 --rounds 9 \
        --md benchmarks/results/chain_ab_cpu.md --json benchmarks/results/chain_ab_cpu.json
    python benchmarks/chain_ab.py --modes ottt_o --models r400 mlp784 --batches 1 8 --threads 1 2

--modes ottt_a ottt_o: which training modes (default ottt_a).

Models: r400 (the fmnist recipe's R400, feedback dropout on), mlp784 (784-400-10 with an untraced input
layer, as benchmarks/online_batch1.py), T = 5, 1x28x28 input; vgg11_ws (the paper's VGG-11), T = 6, 3x32x32.
Optimizer SGD 0.9, wd 5e-4, lr 0.1 x batch / 128.
"""
import argparse
import copy
import itertools
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout

import torch  # noqa: E402
import torch.nn as tnn  # noqa: E402

from ottt_cuda import nn as onn  # noqa: E402
from ottt_cuda.bench.machine import command_line, machine  # noqa: E402
from ottt_cuda.models import r400, vgg11_ws  # noqa: E402
from ottt_cuda.nn import _chain  # noqa: E402
from ottt_cuda.training import train_step  # noqa: E402

MODELS = {"r400": ((1, 28, 28), 5), "mlp784": ((1, 28, 28), 5), "vgg11_ws": ((3, 32, 32), 6)}  # input, T


def build(name, seed=0):
    torch.manual_seed(seed)
    if name == "r400":
        return r400(num_classes=10, feedback_dropout=True)
    if name == "vgg11_ws":
        return vgg11_ws(num_classes=10)
    return tnn.Sequential(tnn.Flatten(1), onn.Linear(784, 400, trace=False), onn.LIF(tau=2.0), onn.Linear(400, 10))


def make_input(name, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape, T = MODELS[name]
    return torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g), T


def optimizer(model, batch):
    return torch.optim.SGD(model.parameters(), lr=0.1 * batch / 128, momentum=0.9, weight_decay=5e-4)


def _step(model, x, y, opt, chain, T, mode="ottt_a"):
    # conv_chains: train_step keeps autograd for convolutional chains (no measured gain on the CPU,
    # which is what this script measures for vgg11_ws); lifted here.
    previous = _chain.enabled, _chain.conv_chains
    _chain.enabled, _chain.conv_chains = chain, True
    try:
        return train_step(model, x, y, opt, T=T, mode=mode)
    finally:
        _chain.enabled, _chain.conv_chains = previous


def check(name, batch, mode="ottt_a"):
    """One step per path on copies of one model: (chain steps run, max |loss diff|, max |grad diff|
    relative to the largest gradient entry; under OTTT_O the gradients of the last time step, and the
    parameters after the T optimizer steps counted in the same way)."""
    a = build(name)
    b = copy.deepcopy(a)
    # OTTT_O needs an optimizer (it steps after every time step); OTTT_A's check only accumulates .grad.
    opt_a, opt_b = (optimizer(a, batch), optimizer(b, batch)) if mode == "ottt_o" else (None, None)
    x, y, T = make_input(name, batch)
    runs = [0]
    forward = _chain.Chain.forward

    def counted(self, x_t):
        runs[0] += 1
        return forward(self, x_t)
    _chain.Chain.forward = counted
    try:
        torch.manual_seed(7)  # the same dropout masks on both paths
        la, _ = _step(a, x, y, opt_a, True, T, mode)
        chain_steps = runs[0]
        torch.manual_seed(7)
        lb, _ = _step(b, x, y, opt_b, False, T, mode)
    finally:
        _chain.Chain.forward = forward
    scale = max(p.grad.abs().max().item() for p in b.parameters())
    grad_diff = max((p.grad - q.grad).abs().max().item() for p, q in zip(a.parameters(), b.parameters())) / scale
    if mode == "ottt_o":
        grad_diff = max(grad_diff, max((p - q).abs().max().item() / max(q.abs().max().item(), 1e-30)
                                       for p, q in zip(a.parameters(), b.parameters())))
    return chain_steps == T, chain_steps, abs(la.item() - lb.item()), grad_diff


def time_case(name, batch, rounds, target_s, mode="ottt_a"):
    model = build(name)
    opt = optimizer(model, batch)
    x, y, T = make_input(name, batch)
    for chain in (True, False):  # warm-up, and the calls per measurement from the first one
        _step(model, x, y, opt, chain, T, mode)
    t0 = time.perf_counter()
    _step(model, x, y, opt, True, T, mode)
    calls = max(1, int(target_s / max(time.perf_counter() - t0, 1e-6)))
    ms = {True: [], False: []}
    for r in range(rounds):
        for chain in ((True, False) if r % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            for _ in range(calls):
                _step(model, x, y, opt, chain, T, mode)
            ms[chain].append((time.perf_counter() - t0) / calls * 1e3)
    return calls, ms[False], ms[True]


def run(args):
    records = []
    for name, mode, batch in itertools.product(args.models, args.modes, args.batches):
        every_step, chain_steps, loss_diff, grad_diff = check(name, batch, mode)
        T = MODELS[name][1]
        if not (every_step and loss_diff <= 1e-5 and grad_diff <= 1e-5):
            raise SystemExit(f"{name} {mode} batch {batch}: the paths disagree or the chain did not run "
                             f"(chain steps {chain_steps}/{T}, loss diff {loss_diff}, grad diff {grad_diff})")
        for threads in args.threads:
            torch.set_num_threads(threads)
            calls, auto, chain = time_case(name, batch, args.rounds, args.target_s, mode)
            records.append({
                "model": name, "mode": mode, "T": T, "batch": batch, "threads": threads,
                "calls_per_measurement": calls,
                "autograd_ms": auto, "chain_ms": chain, "autograd_ms_median": statistics.median(auto),
                "chain_ms_median": statistics.median(chain),
                "speedup": statistics.median(auto) / statistics.median(chain),
                "round_ratios": [a / c for a, c in zip(auto, chain)],
                "check": {"chain_steps": chain_steps, "loss_diff": loss_diff, "grad_diff": grad_diff},
            })
            r = records[-1]
            print(f"{name:7s} {mode} B={batch:<4d} thr={threads} autograd {r['autograd_ms_median']:8.3f} ms  "
                  f"chain {r['chain_ms_median']:8.3f} ms  x{r['speedup']:.2f}", flush=True)
    return records


def markdown(payload):
    lines = ["# The autograd-free OTTT_A / OTTT_O step against the autograd path (CPU)", "",
             f"Command: `{payload['command']}`  ",
             f"Machine: {payload['machine']}  ",
             f"Rounds: {payload['rounds']} (the two paths interleaved in one process, order alternating; median "
             f"of rounds), ~{payload['target_s']} s per measurement; T = 5 (VGG-11: 6); one call = train_step "
             "with its optimizer step(s) (ottt_a: one per call; ottt_o: one per time step).  "]
    if payload.get("note"):
        lines.append(f"Note: {payload['note']}")
    lines += ["", "Checked first, per model and batch: one step per path on copies of the model, same loss and "
              "gradients (max |diff| below; relative to the largest gradient entry; ottt_o: also the parameters "
              "after its T optimizer steps), the chain run at every step.",
              "", "| model | mode | batch | threads | autograd ms / call | chain ms / call | speed-up | "
              "per-round ratios | loss diff | grad diff |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["records"]:
        rounds = " ".join(f"{v:.2f}" for v in r["round_ratios"])
        lines.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['threads']} | {r['autograd_ms_median']:.3f} | "
                     f"{r['chain_ms_median']:.3f} | {r['speedup']:.2f} | {rounds} | {r['check']['loss_diff']:.1e} | "
                     f"{r['check']['grad_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["r400", "mlp784"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 128])
    p.add_argument("--threads", nargs="+", type=int, default=[1])
    p.add_argument("--modes", nargs="+", choices=["ottt_a", "ottt_o"], default=["ottt_a"])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--target-s", type=float, default=0.4, help="seconds per measurement (sets the calls)")
    p.add_argument("--note", default="")
    p.add_argument("--json")
    p.add_argument("--md")
    a = p.parse_args(argv)
    for name in ("batches", "threads"):
        if any(v < 1 for v in getattr(a, name)):
            p.error(f"--{name} must be >= 1")
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    if not a.target_s > 0:
        p.error("--target-s must be > 0")
    return a


def main(argv=None):
    a = parse_args(argv)
    records = run(a)
    payload = {"command": command_line(), "machine": machine("cpu"), "rounds": a.rounds, "target_s": a.target_s,
               "note": a.note, "records": records}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(payload, f, indent=1)
    text = markdown(payload)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
