"""Training-step time with the fused CPU kernels of scaled weight standardization
(csrc/cpu/ws_cpu.cpp) against the torch expressions they replace, side by side in one
process: the kernels are switched on and off between interleaved rounds (ABBA order), so a
drifting machine load hits both alike; the median per call is reported.

    python benchmarks/ws_kernels_ab.py --cases r400:ottt_a:1 r400:ottt_a:8 r400:ottt_o:1 \\
        --rounds 10 --calls 20 --threads 1 --out benchmarks/results/ws_kernels_ab_cpu

A case is MODEL:MODE:BATCH with MODEL one of online_batch1's (mlp784, r400, vgg11_ws).
Before timing, one training step's gradients are compared with the kernels on and off in
float64 (they must agree to 1e-10 relative). Writes OUT.md and OUT.json.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import online_batch1 as ob  # noqa: E402

from ottt_cuda.nn import ws  # noqa: E402

KERNELS = ("_WS_FORWARD_CPU", "_WS_BACKWARD_CPU")
ON = {name: getattr(ws, name) for name in KERNELS}


def use_kernels(on):
    for name in KERNELS:
        setattr(ws, name, ON[name] if on else None)


def parse_case(text):
    try:
        model, mode, batch = text.split(":")
        batch = int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a case is MODEL:MODE:BATCH, got {text!r}")
    if model not in ob.MODELS or mode not in ("ottt_a", "ottt_o") or batch < 1:
        raise argparse.ArgumentTypeError(f"MODEL in {sorted(ob.MODELS)}, MODE ottt_a or ottt_o, BATCH >= 1; "
                                         f"got {text!r}")
    return model, mode, batch


def check_gradients(model_name, mode, batch):
    """Max relative difference of one step's gradients, kernels on vs off, in float64."""
    grads = {}
    for on in (True, False):
        use_kernels(on)
        model, step = ob.build(model_name, mode)
        model.double()
        x, y = ob.make_input(model_name, batch)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        step(x.double(), y, opt, ob.MODELS[model_name][0])
        grads[on] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    use_kernels(True)
    return max(((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
               for a, b in zip(grads[True], grads[False]))


def time_case(model_name, mode, batch, rounds, calls):
    model, step = ob.build(model_name, mode)
    opt = ob.bm.make_optimizer(model)
    x, y = ob.make_input(model_name, batch)
    T = ob.MODELS[model_name][0]
    for on in (True, False):  # warm both paths
        use_kernels(on)
        step(x, y, opt, T)
    times = {True: [], False: []}
    for r in range(rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            use_kernels(on)
            t0 = time.perf_counter()
            for _ in range(calls):
                step(x, y, opt, T)
            times[on].append((time.perf_counter() - t0) / calls)
    use_kernels(True)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=parse_case, nargs="+", default=[parse_case("r400:ottt_a:1")])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=20, help="training steps per timed round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default="")
    p.add_argument("--out", required=True, help="result stem: OUT.md and OUT.json")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        p.error("--rounds and --calls must be >= 1")
    if ON["_WS_FORWARD_CPU"] is None:
        p.error("the fused WS kernels are not in the loaded extension (ottt_cuda._C): nothing to compare")
    torch.set_num_threads(args.threads)
    rows = []
    for model_name, mode, batch in args.cases:
        err = check_gradients(model_name, mode, batch)
        if not err <= 1e-10:
            raise SystemExit(f"{model_name}:{mode}:{batch}: gradients differ with the kernels (max rel. {err:.2e})")
        times = time_case(model_name, mode, batch, args.rounds, args.calls)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        rows.append({"model": model_name, "mode": mode, "batch": batch, "grad_max_rel_diff": err,
                     "ms_kernels": on * 1e3, "ms_torch": off * 1e3, "speedup": off / on,
                     "rounds_kernels_s": times[True], "rounds_torch_s": times[False]})
        print(f"{model_name} {mode} batch {batch}: {on * 1e3:.2f} ms vs {off * 1e3:.2f} ms per step "
              f"({off / on:.2f}x)", flush=True)
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
               "threads": args.threads, "python": platform.python_version()}
    command = "python benchmarks/ws_kernels_ab.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Fused sWS kernels on the CPU: training-step time, kernels on / off (one process)", "",
             f"Command: `{command}`  ", f"Machine: {machine['platform']}, {machine['cpu_count']} cores, torch "
             f"{machine['torch']}, {args.threads} thread(s); {args.rounds} interleaved rounds (ABBA) of "
             f"{args.calls} training steps each, median per step  ", f"Note: {args.note}" if args.note else "", "",
             "One step = T time steps (forward + backward each) and the optimizer step, as online_batch1.py. "
             "Gradients checked first: one step in float64, kernels on vs off.", "",
             "| model | mode | batch | ms / step, kernels | ms / step, torch expressions | speed-up | "
             "grad max rel. diff |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['ms_kernels']:.2f} | {r['ms_torch']:.2f} | "
                     f"{r['speedup']:.2f} | {r['grad_max_rel_diff']:.1e} |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(args.out + ".json", "w") as f:
        json.dump({"command": command, "note": args.note, "machine": machine, "rows": rows}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
