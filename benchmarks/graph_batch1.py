"""The CUDA-graph time step at batch 1 and 8, on a GPU.

784-400-10 (ottt_cuda.bench.methods.mlp784) and R400 (the fmnist recipe's, with feedback dropout), T = 5,
1x28x28 input; the paper's VGG-11 (sWS), T = 6, 3x32x32 input: samples/s of train_step ottt_a eagerly (the
autograd-free chain) and with cuda_graph=True, and SpikingJelly's OTTT on the 784-400-10 net when it is
installed (methods.build's sj_ottt). Correctness first: one training step with the graph and one eager, on
copies of the same weights, must give the same loss, summed output and gradients (float32 tolerances), else
the script stops before timing. Timing: methods interleaved round by round
(ottt_cuda.bench.timing.interleaved_rounds), CUDA synchronized every 10 calls and after each measurement,
median over rounds. Last line: "KEY: graph x eager ..." for the GPU suite's summary.

    python benchmarks/graph_batch1.py --json OUT.json --md OUT.md
"""
import argparse
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402

from ottt_cuda.bench import methods as bm  # noqa: E402
from ottt_cuda.bench.machine import command_line, machine  # noqa: E402
from ottt_cuda.bench.timing import interleaved_rounds  # noqa: E402
from ottt_cuda.models import r400, vgg11_ws  # noqa: E402
from ottt_cuda.training import train_step  # noqa: E402

T = 5  # the 784-400-10 net and R400; VGG-11: MODELS
ALPHA = bm.LOSS_ALPHA


def mlp(seed=0):
    torch.manual_seed(seed)
    return bm.mlp784(num_classes=10)


def recurrent(seed=0):
    torch.manual_seed(seed)
    return r400(num_classes=10, feedback_dropout=True)


def vgg(seed=0):
    torch.manual_seed(seed)
    return vgg11_ws(num_classes=10)


MODELS = {"mlp784": (mlp, (1, 28, 28), T), "r400": (recurrent, (1, 28, 28), T), "vgg11_ws": (vgg, (3, 32, 32), 6)}


def ours(model, graph, steps=T):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        return train_step(model, x, y, opt, T=steps, mode="ottt_a", loss_alpha=ALPHA, sequence=False,
                          cuda_graph=graph)
    return step


def spikingjelly(model):
    """SpikingJelly's OTTT on the weights of `model` (a 784-400-10 net)."""
    net = bm.sj_mlp784(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    sj_step = bm.sj_ottt_step(net, ALPHA)

    def step(x, y):
        sj_step(x, y, opt, T)
    return step


def check(device, batch, name="mlp784"):
    """One call with the graph and one eager on copies: loss, output sum and .grad must agree (the same
    dropout masks: both draw them from one seed)."""
    make, shape, T = MODELS[name]
    a = make().to(device)
    b = copy.deepcopy(a)
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    diffs = {}
    for calls in range(2):  # the second call replays the graph captured by the first
        torch.manual_seed(100 + calls)
        la, oa = train_step(a, x, y, None, T=T, sequence=False, cuda_graph=True)
        torch.manual_seed(100 + calls)
        lb, ob = train_step(b, x, y, None, T=T, sequence=False)
        diffs[f"call {calls} loss"] = abs(float(la) - float(lb)) / max(abs(float(lb)), 1e-12)
        diffs[f"call {calls} output"] = float((oa - ob).abs().max() / ob.abs().max().clamp_min(1e-12))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        diffs[f"grad {n}"] = float((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp_min(1e-12))
    return diffs, all(v <= 1e-4 for v in diffs.values())


def time_methods(name, batch, device, sync, a):
    """Rows of samples/s per method for one model and batch: interleaved rounds, median."""
    make, shape, T = MODELS[name]
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    methods = {"ottt_a eager": ours(make().to(device), False, T), "ottt_a cuda_graph": ours(make().to(device), True, T)}
    if name == "mlp784":
        try:
            methods["sj_ottt"] = spikingjelly(mlp().to(device))
        except ImportError:
            pass
    for m, step in methods.items():  # warm-up (the graph is captured here)
        for _ in range(3):
            step(x, y)
    sync()
    timed = interleaved_rounds({m: (lambda step=step: step(x, y)) for m, step in methods.items()}, a.rounds,
                               sync=sync, target_s=a.target_s, check_every=10)
    rows = []
    for m, r in timed.items():
        s = r.median
        rows.append({"model": name, "T": T, "batch": batch, "method": m, "s_per_call": s, "samples_per_s": batch / s,
                     "ms_per_time_step": s / T * 1e3, "rounds": r.seconds})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp784", "r400", "vgg11_ws"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target-s", type=float, default=0.3, help="seconds per measurement")
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # tests run the script's logic elsewhere
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("needs a CUDA device (cuda_graph=True captures a CUDA graph)")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows, checks = [], []
    for name in a.models:
        for batch in a.batches:
            diffs, ok = check(device, batch, name)
            checks.append({"model": name, "batch": batch, "max_rel_diffs": diffs, "passed": ok})
            if not ok:
                print(f"graph and eager disagree for {name} at batch {batch}: {diffs}")
                return 1
            rows += time_methods(name, batch, device, sync, a)
    eager = {(r["model"], r["batch"]): r["s_per_call"] for r in rows if r["method"] == "ottt_a eager"}
    for r in rows:
        r["x_eager"] = eager[r["model"], r["batch"]] / r["s_per_call"]
    result = {"command": command_line(), "machine": machine(device.type), "checks": checks, "rows": rows}
    lines = ["# CUDA-graph time step (T = 5; VGG-11: 6)", "", f"Command: `{result['command']}`  ",
             f"Machine: {result['machine']}  ", f"Rounds: {a.rounds} interleaved, median; ~{a.target_s} s each.", "",
             "| model | batch | method | samples/s | ms / time step | x eager |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['method']} | {r['samples_per_s']:.0f} | "
              f"{r['ms_per_time_step']:.3f} | {r['x_eager']:.2f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    print("KEY: graph x eager " + ", ".join(f"{r['model']} b{r['batch']} {r['x_eager']:.2f}" for r in rows
                                           if r["method"] == "ottt_a cuda_graph"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
