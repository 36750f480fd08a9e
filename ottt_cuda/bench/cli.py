"""Memory and time of OTTT against BPTT (and SpikingJelly's OTTT/BPTT) per
training step, over T.

    python -m ottt_cuda.bench                  # quick: a few minutes on a 2-core CPU, the headline
    python -m ottt_cuda.bench --full           # the paper's sweep: VGG-11, T = 1..16 (32 on CUDA), every method
    python -m ottt_cuda.bench --device cuda --json out.json --plot out.png
    python -m ottt_cuda.bench --model r400 --batch 2 --T 1 2 --iters 1

Each (method, T) runs in a process of its own (ottt_cuda.bench.launch) so its
peaks are its own. What is measured: see ottt_cuda.bench.memory; the two
workloads: see ottt_cuda.bench.presets.
"""
import argparse
import os
import sys
import time

import torch

from ..train.progress import bar
from . import launch, methods, presets, report, worker
from .machine import machine

def _positive(text):
    """An argparse type for a positive int (argparse prefixes the error with the option's name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _build_parser():
    p = argparse.ArgumentParser(prog="python -m ottt_cuda.bench", description=__doc__.split("\n\n")[0],
                                epilog=presets.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help="the paper's sweep (VGG-11, T = 1..16, 32 on CUDA, every method, 3 timed steps) "
                        "instead of the quick default")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", choices=sorted(methods.MODELS), default=None, help="default vgg11_ws")
    p.add_argument("--batch", type=_positive, default=None,
                   help="default: quick 4 on CPU, 32 on CUDA; --full 16 on CPU, 128 on CUDA")
    p.add_argument("--T", type=_positive, nargs="+", default=None,
                   help="default: quick 1 2 4 8 (CUDA: 1 4 16); --full 1 2 4 8 16 (CUDA: and 32)")
    p.add_argument("--methods", nargs="+", default=None, choices=list(methods.ALL_METHODS),
                   help=f"default: quick {' '.join(presets.QUICK_METHODS)}; --full every method that can run "
                        "here (SpikingJelly's when it is installed)")
    p.add_argument("--iters", type=_positive, default=None,
                   help="timed steps per configuration after 1 warm-up (default: quick 1 on CPU, else 3)")
    p.add_argument("--threads", type=_positive, default=None, help="torch CPU threads in each worker")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    p.add_argument("--malloc", choices=worker.MALLOC_CHOICES, default=worker.TRACKING,
                   help="CPU workers: 'tracking' (malloc settings that make RSS follow tensor lifetimes: exact "
                        "peaks, and step times that include the page faults of every fresh allocation) or "
                        "'default' (the C library's malloc as a training process has it: step times without "
                        "that cost; peaks not measured, freed memory being reused)")
    p.add_argument("--in-process", action="store_true",
                   help="run every configuration in this process (quick checks; the peaks are then not "
                        "per configuration)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the records (a JSON list) here")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="write the two-panel PNG here (default: ottt_bench_<quick|full>_<device>.png in the "
                        "current folder)")
    p.add_argument("--no-plot", action="store_true", help="no PNG")
    return p


def _usable_methods(p, args, requested, explicit):
    """The requested methods that can run here; the others are dropped with a
    message saying why (e.g. no SpikingJelly on a GPU machine), not an error,
    unless nothing is left to run."""
    possible = methods.available_methods(args.model)
    usable = [m for m in requested if m in possible]
    dropped = [m for m in requested if m not in possible]
    reasons = {}  # why -> the dropped methods it explains, in the order requested
    for m in dropped:
        if m in methods.PEERS and not methods.spikingjelly_available():
            why = "SpikingJelly is not installed (pip install spikingjelly to compare with it)"
        elif m == "sj_bptt_memopt" and not methods.memopt_available():
            why = "it needs SpikingJelly >= 2.0 (spikingjelly.activation_based.memopt)"
        else:
            why = f"not available for --model {args.model}"
        reasons.setdefault(why, []).append(m)
    for why, ms in reasons.items():
        print(f"skipping {' '.join(ms)}: {why}", file=sys.stderr)
    if not usable:
        p.error(f"--methods {' '.join(requested)}: none can run here ({'explicit' if explicit else 'default'} "
                f"choice; available for --model {args.model}: {' '.join(possible)})")
    return usable


def parse_args(argv=None):
    p = _build_parser()
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if not args.timeout > 0:
        p.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.malloc == worker.DEFAULT_MALLOC and args.in_process:
        p.error("--malloc default runs each configuration in a fresh interpreter; not with --in-process")
    args.preset = "full" if args.full else "quick"
    defaults = presets.preset(args.preset, args.device)
    explicit_methods = args.methods is not None
    for key in ("model", "batch", "T", "iters"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    requested = args.methods or defaults["methods"] or methods.available_methods(args.model)
    args.methods = _usable_methods(p, args, list(dict.fromkeys(requested)), explicit_methods)
    if args.plot is None and not args.no_plot:
        args.plot = f"ottt_bench_{args.preset}_{args.device}.png"
    if args.no_plot:
        args.plot = None
    return args


def _in_process(config):
    from . import worker

    try:
        return worker.run(config)
    except Exception as e:  # reported like a failed subprocess
        return dict(config, iter_s=None, peak_mb=None, saved_mb=None, error=f"{type(e).__name__}: {e}")


def _duration(seconds):
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    configs = [{"method": m, "T": T, "batch": args.batch, "device": args.device, "model": args.model,
                "iters": args.iters, "threads": args.threads, "malloc": args.malloc}
               for m in args.methods for T in args.T]
    meta = {"machine": machine(args.device), "torch": torch.__version__, "preset": args.preset,
            "command": " ".join(["python -m ottt_cuda.bench"] + (sys.argv[1:] if argv is None else list(argv))),
            "memory": "saved_mb: peak of live bytes saved for backward (once per storage) + layer state; "
                      "peak_mb: peak growth during one step (CUDA allocator or process RSS high-water mark); "
                      "iter_s: median step time (on the CPU with --malloc tracking, the default, it includes "
                      "the page faults of every fresh allocation; --malloc default times the C library's "
                      "malloc and leaves peak_mb unmeasured). Details: ottt_cuda/bench/memory.py",
            "malloc": args.malloc}
    print(f"{args.preset} benchmark: {args.model}, batch {args.batch}, T = {' '.join(map(str, args.T))}, "
          f"{' '.join(args.methods)} on {args.device}; {len(configs)} configurations, each in a fresh process",
          file=sys.stderr)
    records = []
    pb = bar(len(configs), f"{args.model} {args.device} b={args.batch}", unit="config")
    try:
        for c in configs:
            pb.set_postfix_str(f"{c['method']} T={c['T']}")
            rec = _in_process(c) if args.in_process else launch.run_config(c, args.timeout)
            if rec.get("error"):
                pb.write(f"{c['method']} T={c['T']} failed:\n{rec['error']}", file=sys.stderr)
            records.append(rec)
            if args.json:  # after every configuration: a long run stopped midway keeps what it measured
                report.write_json(args.json, records, meta)
            pb.update(1)
    finally:
        pb.close()

    print(f"\n{args.model}, batch {args.batch}, {args.device}, {args.iters} timed step(s) per configuration "
          f"(median), torch {torch.__version__}\n")
    print(report.table(records))
    summary = report.headline(records)
    if summary:
        print("\n" + summary)
    if args.json:
        report.write_json(args.json, records, meta)
        print(f"\nwrote {os.path.abspath(args.json)}", file=sys.stderr)
    if args.plot and any(r.get("error") is None for r in records):
        title = f"ottt_cuda vs BPTT: {args.model}, batch {args.batch}, {args.device}"
        try:
            report.plot(args.plot, records, title)
            print(f"wrote {os.path.abspath(args.plot)}", file=sys.stderr)
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    if args.preset == "quick":
        print(f"\nThis was the quick benchmark. The paper's sweep (VGG-11, T = 1..16, 32 on CUDA, every method): "
              f"{presets.FULL_COMMAND}", file=sys.stderr)
    print(f"total elapsed: {_duration(time.perf_counter() - t0)}", file=sys.stderr)
    failed = [r for r in records if r.get("error")]
    return 1 if failed and len(failed) == len(records) else 0
