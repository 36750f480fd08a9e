"""Memory and time of OTTT against BPTT (and SpikingJelly's OTTT/BPTT) per
training step, over T.

    python -m ottt_cuda.bench                  # quick: under 3 minutes on a 2-core CPU, the headline
    python -m ottt_cuda.bench --full           # the paper's sweep: VGG-11, T = 1..16 (32 on CUDA), every method
    python -m ottt_cuda.bench --device cuda --json out.json --plot out.png
    python -m ottt_cuda.bench --model r400 --batch 2 --T 1 2 --rounds 1

Everything runs in this process: for each T, every method's memory is measured in
untimed steps, then the methods are timed side by side in interleaved rounds
(ottt_cuda.bench.sweep). What is measured: ottt_cuda.bench.memory; the two
workloads: ottt_cuda.bench.presets.
"""
import argparse
import os
import sys
import time

import torch

from ..train.progress import bar
from . import methods, presets, report, sweep
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
                   help="the paper's sweep (VGG-11, T = 1..16, 32 on CUDA, every method) instead of the quick default")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", choices=sorted(methods.MODELS), default=None, help="default vgg11_ws")
    p.add_argument("--batch", type=_positive, default=None,
                   help="default: quick %d on CPU, %d on CUDA; --full %d on CPU, %d on CUDA" % tuple(
                       presets.PRESETS[k]["batch"] for k in (("quick", "cpu"), ("quick", "cuda"), ("full", "cpu"),
                                                            ("full", "cuda"))))
    p.add_argument("--T", type=_positive, nargs="+", default=None,
                   help="default: quick %s (CUDA: %s); --full %s (CUDA: %s)" % tuple(
                       " ".join(map(str, presets.PRESETS[k]["T"])) for k in (
                           ("quick", "cpu"), ("quick", "cuda"), ("full", "cpu"), ("full", "cuda"))))
    p.add_argument("--methods", nargs="+", default=None, choices=list(methods.ALL_METHODS),
                   help=f"default: quick {' '.join(presets.QUICK_METHODS)}; --full every method that can run "
                        "here (SpikingJelly's when it is installed)")
    p.add_argument("--rounds", "--iters", dest="rounds", type=_positive, default=None,
                   help="timed rounds per T; each round times one step of every method in turn (default: "
                        "quick %d on CPU, else %d)" % (presets.PRESETS["quick", "cpu"]["rounds"],
                                                      presets.PRESETS["full", "cpu"]["rounds"]))
    p.add_argument("--threads", type=_positive, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--timeout", type=float, default=3600,
                   help="seconds: a method whose measuring pass at one T takes longer is not run at larger T")
    p.add_argument("--json", default=None, metavar="PATH", help="write the records (a JSON list) here")
    p.add_argument("--md", default=None, metavar="PATH",
                   help="write a Markdown report here: command, machine, table, legend, headline")
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
        if m in methods.PEERS and m in methods.PEERS_OF.get(args.model, ()) and not methods.spikingjelly_available():
            why = "SpikingJelly is not installed (pip install spikingjelly to compare with it)"
        elif m == "sj_bptt_memopt" and m in methods.PEERS_OF.get(args.model, ()) and not methods.memopt_available():
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
    args.preset = "full" if args.full else "quick"
    defaults = presets.preset(args.preset, args.device)
    explicit_methods = args.methods is not None
    for key in ("model", "batch", "T", "rounds"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    args.T = sorted(set(args.T))
    requested = args.methods or defaults["methods"] or methods.available_methods(args.model)
    args.methods = _usable_methods(p, args, list(dict.fromkeys(requested)), explicit_methods)
    if args.plot is None and not args.no_plot:
        args.plot = f"ottt_bench_{args.preset}_{args.device}.png"
    if args.no_plot:
        args.plot = None
    return args


def _duration(seconds):
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def conditions(args):
    """One sentence: what ran, where, and how it was measured."""
    where = f"{torch.get_num_threads()} CPU thread(s)" if args.device == "cpu" else torch.cuda.get_device_name()
    return (f"Measured: {args.model}, batch {args.batch}, random input, float32, on {args.device} ({where}), "
            f"torch {torch.__version__}; time per training step = median of {args.rounds} interleaved round(s) "
            "(methods side by side in one process, no profiler, allocator untouched); memory from allocator "
            "events in separate untimed steps.")


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _main(args, argv, t0)
    finally:
        torch.set_num_threads(threads)


def _main(args, argv, t0):
    meta = {"machine": machine(args.device), "torch": torch.__version__, "preset": args.preset,
            "threads": torch.get_num_threads(), "rounds": args.rounds,
            "command": " ".join(["python -m ottt_cuda.bench"] + (sys.argv[1:] if argv is None else list(argv))),
            "columns": report.legend(args.rounds) + " Details: ottt_cuda/bench/memory.py, ottt_cuda/bench/sweep.py"}
    n = len(args.methods) * len(args.T)
    print(f"{args.preset} benchmark: {args.model}, batch {args.batch}, T = {' '.join(map(str, args.T))}, "
          f"{' '.join(args.methods)} on {args.device}, {torch.get_num_threads()} thread(s); {n} configurations, "
          f"{args.rounds} timed round(s) each", file=sys.stderr)
    records, dropped = [], {}
    pb = bar(n, f"{args.model} {args.device} b={args.batch}", unit="config")

    def on_record(rec):
        if rec.get("error"):
            pb.write(f"{rec['method']} T={rec['T']} failed:\n{rec['error']}", file=sys.stderr)
        pb.update(1)

    try:
        for T in args.T:
            pb.set_postfix_str(f"T={T}")
            run = [m for m in args.methods if m not in dropped]
            for m in args.methods:
                if m in dropped:
                    records.append(dict(method=m, T=T, batch=args.batch, device=args.device, model=args.model,
                                        iter_s=None, peak_mb=None, saved_mb=None, error=dropped[m]))
                    pb.update(1)
            recs = sweep.run_T(args.model, T, run, args.batch, args.device, args.rounds, on_record=on_record)
            for r in recs:
                if r.get("error") is None and r["measure_s"] > args.timeout:
                    dropped[r["method"]] = (f"not run: its measuring pass at T={T} took {r['measure_s']:.0f} s "
                                            f"> --timeout {args.timeout:g}")
            records += recs
            records.sort(key=lambda r: (args.methods.index(r["method"]), r["T"]))
            if args.json:  # after every T: a long run stopped midway keeps what it measured
                report.write_json(args.json, records, meta)
    finally:
        pb.close()

    print(f"\n{args.model}, batch {args.batch}, {args.device}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}\n")
    table = report.table(records)
    print(table)
    print("\n" + report.legend(args.rounds))
    summary = report.headline(records, conditions(args))
    if summary:
        print("\n" + summary)
    elapsed = time.perf_counter() - t0
    meta["elapsed_s"] = elapsed
    if args.json:
        report.write_json(args.json, records, meta)
        print(f"\nwrote {os.path.abspath(args.json)}", file=sys.stderr)
    if args.md:
        report.write_markdown(args.md, table, report.legend(args.rounds), summary, meta, plot=args.plot)
        print(f"wrote {os.path.abspath(args.md)}", file=sys.stderr)
    if args.plot and any(r.get("error") is None for r in records):
        title = f"ottt_cuda vs BPTT: {args.model}, batch {args.batch}, {args.device}, {torch.get_num_threads()} thread(s)"
        try:
            report.plot(args.plot, records, title)
            print(f"wrote {os.path.abspath(args.plot)}", file=sys.stderr)
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    if args.preset == "quick":
        print(f"\nThis was the quick benchmark. The paper's sweep (VGG-11, T = 1..16, 32 on CUDA, every method): "
              f"{presets.FULL_COMMAND}", file=sys.stderr)
    print(f"total elapsed: {_duration(elapsed)}", file=sys.stderr)
    failed = [r for r in records if r.get("error")]
    return 1 if failed and len(failed) == len(records) else 0
