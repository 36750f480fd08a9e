"""Memory and time of OTTT against BPTT (and SpikingJelly's OTTT/BPTT) per
training step, over T.

    python -m ottt_cuda.bench                      # VGG-11 sWS, CIFAR-sized random input, CPU
    python -m ottt_cuda.bench --device cuda --json out.json --plot out.png
    python -m ottt_cuda.bench --model r400 --batch 2 --T 1 2 --iters 1

Each (method, T) runs in a fresh subprocess (ottt_cuda.bench.worker) so its
peaks are its own. What is measured: see ottt_cuda.bench.memory.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

import torch

from . import methods, progress, report

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _common():
    """benchmarks/_common.py of a checkout (shared machine description), if present."""
    path = os.path.join(_PKG_PARENT, "benchmarks", "_common.py")
    if not os.path.exists(path):
        return None
    import importlib.util

    spec = importlib.util.spec_from_file_location("_ottt_bench_common", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def machine(device):
    common = _common()
    if common is not None:
        info = common.machine(device)
    else:
        info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__,
                "device": str(device)}
    try:
        import spikingjelly

        info["spikingjelly"] = getattr(spikingjelly, "__version__", "installed")
    except ImportError:
        info["spikingjelly"] = None
    try:
        import ottt_cuda

        info["ottt_cuda_backend"] = ottt_cuda.get_backend(torch.device(device))
    except Exception as e:  # a description must not stop the benchmark
        info["ottt_cuda_backend"] = f"unknown ({type(e).__name__})"
    return info


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m ottt_cuda.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", choices=sorted(methods.MODELS), default="vgg11_ws")
    p.add_argument("--batch", type=int, default=None, help="default 16 on CPU, 128 on CUDA")
    p.add_argument("--T", type=int, nargs="+", default=None, help="default 1 2 4 8 16 (CUDA: and 32)")
    p.add_argument("--methods", nargs="+", default=None, choices=list(methods.ALL_METHODS),
                   help="default: all that can run here (peers when SpikingJelly is installed)")
    p.add_argument("--iters", type=int, default=3, help="timed steps per configuration (after 1 warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in each worker")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    p.add_argument("--in-process", action="store_true",
                   help="run every configuration in this process (quick checks; the peaks are then not "
                        "per configuration)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the records (a JSON list) here")
    p.add_argument("--plot", default=None, metavar="PATH", help="write the two-panel PNG here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.batch is None:
        args.batch = 128 if args.device == "cuda" else 16
    if args.T is None:
        args.T = [1, 2, 4, 8, 16] + ([32] if args.device == "cuda" else [])
    if any(t < 1 for t in args.T) or args.batch < 1 or args.iters < 1:
        p.error("--T, --batch and --iters must be positive")
    possible = methods.available_methods(args.model)
    if args.methods is None:
        args.methods = possible
    else:
        missing = [m for m in args.methods if m not in possible]
        if missing:
            why = "SpikingJelly is not installed" if not methods.spikingjelly_available() else \
                f"not available for --model {args.model}"
            p.error(f"methods {missing}: {why}")
    return args


def _worker_env():
    env = dict(os.environ)
    # The worker must import this very package (a checkout or an install).
    env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Make RSS follow tensor lifetimes (see ottt_cuda.bench.memory): large
    # blocks mmapped with a fixed threshold, returned to the OS on free.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    return env


def run_config(config, timeout, env):
    """Run one configuration in a fresh process; a record, or one with "error"."""
    cmd = [sys.executable, "-m", "ottt_cuda.bench.worker", json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(config, iter_s=None, peak_mb=None, saved_mb=None, error=f"timed out after {timeout:.0f} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    err = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}")
    return dict(config, iter_s=None, peak_mb=None, saved_mb=None, error=err[-2000:])


def _in_process(config):
    from . import worker

    try:
        return worker.run(config)
    except Exception as e:  # reported like a failed subprocess
        return dict(config, iter_s=None, peak_mb=None, saved_mb=None, error=f"{type(e).__name__}: {e}")


def main(argv=None):
    args = parse_args(argv)
    configs = [{"method": m, "T": T, "batch": args.batch, "device": args.device, "model": args.model,
                "iters": args.iters, "threads": args.threads} for m in args.methods for T in args.T]
    env = _worker_env()
    meta = {"machine": machine(args.device), "torch": torch.__version__,
            "command": " ".join(["python -m ottt_cuda.bench"] + (sys.argv[1:] if argv is None else list(argv))),
            "memory": "saved_mb: peak of live bytes saved for backward (once per storage) + layer state; "
                      "peak_mb: peak growth during one step (CUDA allocator or process RSS high-water mark); "
                      "iter_s: median step time. Details: ottt_cuda/bench/memory.py"}
    records = []
    pb = progress.bar(len(configs), desc=f"{args.model} {args.device} b={args.batch}")
    try:
        for c in configs:
            pb.set_postfix_str(f"{c['method']} T={c['T']}")
            rec = _in_process(c) if args.in_process else run_config(c, args.timeout, env)
            if rec.get("error"):
                print(f"\n{c['method']} T={c['T']} failed:\n{rec['error']}", file=sys.stderr)
            records.append(rec)
            if args.json:  # after every configuration: a long run stopped midway keeps what it measured
                report.write_json(args.json, records, meta)
            pb.update(1)
    finally:
        pb.close()

    print(f"\n{args.model}, batch {args.batch}, {args.device}, {args.iters} timed steps per configuration "
          f"(median), torch {torch.__version__}\n")
    print(report.table(records))
    if args.json:
        report.write_json(args.json, records, meta)
        print(f"\nwrote {args.json}", file=sys.stderr)
    if args.plot:
        title = f"ottt_cuda vs BPTT: {args.model}, batch {args.batch}, {args.device}"
        try:
            report.plot(args.plot, records, title)
            print(f"wrote {args.plot}", file=sys.stderr)
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    failed = [r for r in records if r.get("error")]
    return 1 if failed and len(failed) == len(records) else 0
