"""Interleaved rounds of `python -m ottt_cuda.bench` (issue 10 part 2): time and peak memory of one
training step per method, each configuration in a fresh process, methods interleaved round by round
(A B C, A B C, ...) so that a shared machine's slow minutes fall on every method alike; the report
gives each method's median over rounds and the ratios measured side by side.

    python benchmarks/step_rounds.py --batch 16 --T 8 --threads 1 2 --rounds 3 \
        --methods ottt_a bptt sj_ottt --md benchmarks/results/step_rounds_cpu.md --json ...json

--steady: all methods in this one process instead, freed memory kept by the C library
(ottt_cuda.bench.timing.reuse_freed_memory) and --warmup steps each first: the steady state of a long
training run, where a step's buffers come back without page faults (a fresh process returns freed
memory to the OS and faults it in again at every step). Time only: peaks are not per method then.

--malloc default: passed on to the bench (`python -m ottt_cuda.bench --malloc default`): each
configuration in a fresh interpreter with the C library's malloc as any training process has it. The
bench's default (--malloc tracking) sets MALLOC_MMAP_THRESHOLD_=65536 / MALLOC_TRIM_THRESHOLD_=131072
so that RSS follows tensor lifetimes and its peaks are exact; that makes every allocation above 64 KB a
fresh mmap, whose page faults its times then include: a method that allocates and frees a time step's buffers T times per
step (OTTT) pays them T times, one that allocates the whole sequence's at once (BPTT) once. Under the
default malloc, freed memory is reused, so that run does not measure peaks (read them from a tracking
run).
Correctness is the bench's own: every method's gradients are checked against BPTT's by the test
suite, and SpikingJelly's peers are checked by `ottt_cuda.bench` before they are timed.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout

from ottt_cuda.bench.machine import command_line, machine  # noqa: E402
from ottt_cuda.bench.report import _fmt  # noqa: E402
from ottt_cuda.bench.worker import DEFAULT_MALLOC, MALLOC_CHOICES, TRACKING  # noqa: E402


def run_one(method, args, threads, out):
    cmd = [sys.executable, "-m", "ottt_cuda.bench", "--model", args.model, "--batch", str(args.batch), "--T",
           str(args.T), "--methods", method, "--iters", str(args.iters), "--threads", str(threads), "--json", out,
           "--no-plot", "--timeout", str(args.timeout), "--malloc", args.malloc]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        rec = [r for r in json.load(f) if r["method"] == method]
    if not rec or rec[0].get("iter_s") is None:
        raise RuntimeError(f"{method} at {threads} thread(s) gave no timing: {rec}")
    return rec[0]


def steady_rounds(a):
    """Every method built here, --warmup steps each, then rounds interleaved in this process."""
    import torch

    from ottt_cuda.bench import methods
    from ottt_cuda.bench.timing import reuse_freed_memory

    reuse_freed_memory()
    dev = torch.device("cpu")
    x, y = methods.make_input(a.model, a.batch, dev, seed=0)
    built = {}
    for m in a.methods:
        model, step = methods.build(m, a.model, dev, seed=0, example=(x, a.T))
        model.train()
        built[m] = (model, step, methods.make_optimizer(model))
    records = []
    for th in a.threads:
        torch.set_num_threads(th)
        for model, step, opt in built.values():
            for _ in range(a.warmup):
                step(x, y, opt, a.T)
        for r in range(a.rounds):
            for m, (model, step, opt) in built.items():
                times = []
                for _ in range(a.iters):
                    t0 = time.perf_counter()
                    step(x, y, opt, a.T)
                    times.append(time.perf_counter() - t0)
                rec = {"round": r, "threads": th, "method": m, "iter_s": statistics.median(times),
                       "peak_mb": float("nan"), "saved_mb": None}
                records.append(rec)
                print(f"round {r} threads {th} {m:>16}: {rec['iter_s']:.3f} s (steady)", flush=True)
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg11_ws")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--methods", nargs="+", default=["ottt_a", "bptt", "sj_ottt"])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=2, help="timed steps per process (after 1 warm-up)")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--steady", action="store_true", help="one process, memory kept, warm: see the module doc")
    p.add_argument("--malloc", choices=MALLOC_CHOICES, default=TRACKING,
                   help="fresh processes: the bench's RSS-tracking malloc settings, or the C library's default")
    p.add_argument("--warmup", type=int, default=3, help="--steady: untimed steps per method and thread count")
    p.add_argument("--note", default="")
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    a = p.parse_args(argv)
    if a.rounds < 1 or a.iters < 1:
        p.error("--rounds and --iters must be at least 1")
    if a.steady and a.malloc != TRACKING:
        p.error("--malloc is for fresh processes (--steady keeps freed memory itself)")
    t0 = time.time()
    if a.steady:
        records = steady_rounds(a)
    else:
        records = _fresh_rounds(a)
    summary = _summary(a, records)
    _report(a, records, summary, t0)


def _fresh_rounds(a):
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for th in a.threads:
                for m in a.methods:
                    rec = run_one(m, a, th, os.path.join(tmp, "r.json"))
                    records.append({"round": r, "threads": th, "method": m, "iter_s": rec["iter_s"],
                                    "peak_mb": rec["peak_mb"], "saved_mb": rec.get("saved_mb")})
                    print(f"round {r} threads {th} {m:>16}: {rec['iter_s']:.3f} s, peak {_mb(rec['peak_mb'])} MB",
                          flush=True)
    return records


def _mb(v):
    return _fmt(v, ".0f")  # "–" for a peak the run did not measure (None or NaN)


def _summary(a, records):
    summary = {}
    for th in a.threads:
        for m in a.methods:
            rs = [x for x in records if x["threads"] == th and x["method"] == m]
            summary[f"{th}/{m}"] = {"threads": th, "method": m, "iter_s": statistics.median(x["iter_s"] for x in rs),
                                    "peak_mb": statistics.median(x["peak_mb"] for x in rs),
                                    "iter_s_rounds": [x["iter_s"] for x in rs]}
    return summary


def _report(a, records, summary, t0):
    result = {"command": command_line(), "machine": machine("cpu"), "note": a.note, "model": a.model,
              "batch": a.batch, "T": a.T, "rounds": a.rounds, "iters": a.iters, "steady": a.steady,
              "malloc": None if a.steady else a.malloc,
              "wall_s": time.time() - t0, "records": records, "summary": summary}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    lines = [f"# One training step, {a.model}, batch {a.batch}, T = {a.T}: interleaved rounds", "",
             f"Command: `{result['command']}`  ",
             f"Machine: {result['machine']}  ",
             (f"Rounds: {a.rounds} (methods interleaved in ONE process, freed memory kept, {a.warmup} warm-up steps "
              f"per method first, {a.iters} timed steps per round; median over rounds; peaks not measured). "
              if a.steady else
              f"Rounds: {a.rounds} (methods interleaved, a fresh process per configuration, {a.iters} timed steps "
              f"after 1 warm-up in each; median over rounds; " +
              ("the C library's default malloc: freed memory reused, peaks not measured). "
               if a.malloc == DEFAULT_MALLOC else "the bench's RSS-tracking malloc settings). ")) +
             f"Wall: {result['wall_s']:.0f} s.  "]
    if a.note:
        lines.append(f"Note: {a.note}")
    base = "bptt" if "bptt" in a.methods else a.methods[0]
    lines += ["", f"| threads | method | s / step (median) | rounds | peak MB | time x {base} | "
                  "SpikingJelly OTTT time / this |", "|---|---|---|---|---|---|---|"]
    for th in a.threads:
        for m in a.methods:
            s = summary[f"{th}/{m}"]
            ref = summary[f"{th}/{base}"]["iter_s"]
            sj = summary.get(f"{th}/sj_ottt")
            lines.append(f"| {th} | {m} | {s['iter_s']:.3f} | {', '.join(f'{v:.2f}' for v in s['iter_s_rounds'])} | "
                         f"{_mb(s['peak_mb'])} | {s['iter_s'] / ref:.2f} | "
                         f"{'-' if sj is None else format(sj['iter_s'] / s['iter_s'], '.2f')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
