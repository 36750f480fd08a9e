"""Per-op profile of one training step: chunked OTTT_A (chunk = T) against BPTT (issue 10 part 2).

Both compute with the same GEMMs/convolutions over T steps, so their per-op tables should differ only
in the LIF kernels (T single steps against one multi-step kernel) and the trace stacking; any other op
that shows up in one table only is overhead to remove. Each mode is timed (warm-up, then `--rounds`
interleaved rounds, median) and then profiled once with torch.profiler (CPU time and memory per op).

    python benchmarks/chunk_profile.py --batch 16 --T 8 --threads 1 --out benchmarks/results/chunk_profile_cpu.txt
"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import ottt_cuda  # noqa: E402
from ottt_cuda.models import vgg11_ws  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", type=int, default=20, help="ops per profile table")
    p.add_argument("--out", default=None, help="also write the report here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    model = vgg11_ws()
    modes = {"bptt": dict(mode="bptt"), f"ottt_a chunk={args.T}": dict(mode="ottt_a", chunk=args.T)}

    def step(kw):
        model.zero_grad(set_to_none=True)
        return ottt_cuda.train_step(model, x, y, None, T=args.T, **kw)

    # correctness first: chunked OTTT_A must give step-by-step OTTT_A's gradients (BPTT's differ: another method)
    grads = []
    for kw in (dict(mode="ottt_a"), modes[f"ottt_a chunk={args.T}"]):
        step(kw)
        grads.append([q.grad.clone() for q in model.parameters()])
    assert all(torch.allclose(u, v, rtol=1e-3, atol=1e-6) for u, v in zip(*grads)), "chunked != step-by-step OTTT_A"

    times = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, kw in modes.items():
            t0 = time.perf_counter()
            step(kw)
            times[name].append(time.perf_counter() - t0)
    lines = [f"VGG-11 sWS, batch {args.batch}, 3x32x32, T = {args.T}, {torch.get_num_threads()} thread(s), "
             f"torch {torch.__version__}, load average {os.getloadavg()}",
             "command: python " + " ".join(sys.argv), ""]
    base = statistics.median(times["bptt"])
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"{name:>16}: median {med * 1e3:.0f} ms ({', '.join(f'{t * 1e3:.0f}' for t in ts)}), "
                     f"{med / base:.2f}x bptt")
    for name, kw in modes.items():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(kw)
        lines += ["", f"===== {name}",
                  prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows,
                                            max_name_column_width=40)]
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
