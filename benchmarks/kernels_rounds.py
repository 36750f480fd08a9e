"""Interleaved rounds of benchmarks/kernels.py for two checkouts (before / after a change),
each run a fresh process, and a report of the medians: what kernels_cpu.md quotes.

    python benchmarks/kernels_rounds.py --before /path/to/old/checkout --rounds 5 \\
        --numel 1048576 65536 --threads 1 --out benchmarks/results/kernels_cpu_rounds

Both checkouts must have their extension built in place and the same kernels.py (checked:
the same benchmark code on both sides). Each round runs before, then after, for every size
(the order alternates between rounds, so that a drifting machine load hits both alike).
Every run checks each kernel against the reference before timing it (kernels.py).
Writes OUT.md (medians, per size: ms and "x best eager" before and after) and OUT.json
(every run's rows, with the machine's load average around each run).
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
AFTER = os.path.dirname(HERE)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _run(checkout, numel, args, tmp, tag):
    stem = os.path.join(tmp, tag)
    cmd = [sys.executable, os.path.join(checkout, "benchmarks", "kernels.py"), "--threads", str(args.threads),
           "--numel", str(numel), "--batches", *map(str, args.batches), "--out", stem]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=checkout)
    with open(stem + ".json") as f:
        return json.load(f)


def _median(values):
    return statistics.median(values) if values else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="checkout with the code before the change (built in place)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--numel", type=int, nargs="+", default=[1 << 20, 1 << 16])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16, 32, 128])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default="", help="what 'before' and 'after' are, for the report")
    p.add_argument("--out", required=True, help="result stem: OUT.md and OUT.json")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    before = os.path.abspath(args.before)
    if _digest(os.path.join(before, "benchmarks", "kernels.py")) != _digest(os.path.join(HERE, "kernels.py")):
        p.error("--before has another benchmarks/kernels.py: the two sides would not run the same benchmark")

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for numel in args.numel:
                order = [("before", before), ("after", AFTER)]
                if r % 2:
                    order.reverse()
                for build, checkout in order:
                    res = _run(checkout, numel, args, tmp, f"{build}_{numel}_{r}")
                    runs.append({"round": r + 1, "numel": numel, "build": build,
                                 "load_average_1_5_15min": res["load_average_1_5_15min"], "rows": res["rows"]})
                    print(f"round {r + 1} numel {numel} {build}: done", flush=True)

    machine = res["machine"]
    # kernels.py records {"start": [1, 5, 15 min], "end": [...]} (None where the OS has no load average)
    loads = [la[k][0] for la in (x["load_average_1_5_15min"] for x in runs) if la for k in ("start", "end")] or ["?"]
    lines = [f"# Kernel benchmark rounds: before / after ({args.rounds} interleaved rounds, medians)", "",
             f"Command: `python benchmarks/kernels_rounds.py --before {args.before} --rounds {args.rounds} --numel "
             f"{' '.join(map(str, args.numel))} --batches {' '.join(map(str, args.batches))} --threads {args.threads}"
             f" --out {args.out}`  ",
             f"Machine: {machine['platform']}, {machine['cpu_count']} cores, torch {machine['torch']}, "
             f"{args.threads} torch thread(s); load average (1 min) at the runs' starts and ends: "
             f"{min(loads)}-{max(loads)}  ",
             f"Note: {args.note}" if args.note else "", "",
             "Each cell: the median over rounds of one run's value (a run's ms is the median of its calls; "
             "\"x best eager\": the fastest plain-PyTorch rival timed in the same run, kernels.py).", ""]
    for numel in args.numel:
        lines += [f"## {numel} neurons", "", "| op | backend | before ms | after ms | before x best eager | "
                  "after x best eager |", "|---|---|---:|---:|---:|---:|"]
        keys = []
        for x in runs:
            for row in x["rows"]:
                if x["numel"] == numel and (row["op"], row["backend"]) not in keys:
                    keys.append((row["op"], row["backend"]))
        for op, backend in keys:
            cell = {}
            for build in ("before", "after"):
                rows = [row for x in runs if x["numel"] == numel and x["build"] == build for row in x["rows"]
                        if row["op"] == op and row["backend"] == backend]
                cell[build] = (_median([row["ms"] for row in rows]),
                               _median([row["speedup_vs_eager"] for row in rows if row.get("speedup_vs_eager")]))
            lines.append(f"| {op} | {backend} | {cell['before'][0]:.4f} | {cell['after'][0]:.4f} | "
                         f"{cell['before'][1]:.2f} | {cell['after'][1]:.2f} |")
        lines.append("")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines))
    with open(args.out + ".json", "w") as f:
        json.dump({"command": sys.argv, "note": args.note, "machine": machine, "runs": runs}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
