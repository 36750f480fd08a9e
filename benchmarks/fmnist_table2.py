"""Collect Fashion-MNIST R400 runs (the paper's Table 2) into one report.

Each run is a directory written by `ottt-train fmnist` (metrics.csv + result.json). Runs are
grouped by an ARM label (a recipe variant) and the training mode; the report gives per seed the
final and best test accuracy and, per group, their means and standard deviations beside the
paper's numbers, plus every run's test-accuracy curve.

    python benchmarks/fmnist_table2.py --run base:0=runs/base_s0 --run base:1=runs/base_s1 \
        --json benchmarks/results/X.json --md benchmarks/results/X.md --plot benchmarks/results/X.png

--run ARM:SEED=DIR reads the mode and the target epochs from DIR/result.json; a run stopped before
it wrote result.json (killed, or still running) needs --run ARM:MODE:SEED=DIR and takes its target
from --epochs-target. A run that is not complete (fewer epochs than its target) is reported as such
and left out of the means.
"""
import argparse
import csv
import json
import os
import statistics
import sys

# Supplementary D.3, Table 2 (R400, T = 5, 100 epochs).
PAPER = {"bptt": 90.58, "ottt_a": 90.36, "ottt_o": 90.40}


def read_run(path, mode=None, epochs_target=100):
    result_path = os.path.join(path, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
    elif mode is None:
        raise SystemExit(f"{path} has no result.json (stopped early?): name its mode, --run ARM:MODE:SEED=DIR")
    else:
        result = {"mode": mode, "epochs_target": epochs_target}
    if mode is not None and result["mode"] != mode:
        raise SystemExit(f"{path}: --run says mode {mode} but result.json says {result['mode']}")
    with open(os.path.join(path, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    curve = [float(r["test_acc"]) * 100 for r in rows]
    if not curve:
        raise SystemExit(f"{path}: metrics.csv has no epochs")
    return {
        "mode": result["mode"], "epochs": len(curve), "epochs_target": int(result["epochs_target"]),
        "final": curve[-1], "best": max(curve), "best_epoch": curve.index(max(curve)) + 1,
        "curve": curve, "train_loss": [float(r["train_loss"]) for r in rows], "dir": path,
    }


def parse_run(text):
    try:
        label, path = text.split("=", 1)
        parts = label.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError
        return parts[0], (parts[1] if len(parts) == 3 else None), int(parts[-1]), path
    except ValueError:
        raise argparse.ArgumentTypeError(f"--run must be ARM:SEED=DIR or ARM:MODE:SEED=DIR, got {text!r}") from None


def _stats(values):
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["arm"], r["mode"]), []).append(r)
    out = []
    for (arm, mode), rs in groups.items():
        done = [r for r in rs if r["epochs"] >= r["epochs_target"]]
        fm, fs = _stats([r["final"] for r in done])
        bm, bs = _stats([r["best"] for r in done])
        out.append({"arm": arm, "mode": mode, "seeds": sorted(r["seed"] for r in done),
                    "incomplete": sorted(r["seed"] for r in rs if r not in done),
                    "final_mean": fm, "final_std": fs, "best_mean": bm, "best_std": bs,
                    "paper": PAPER.get(mode)})
    return out


def _f(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def markdown(runs, groups, note, command):
    lines = ["# Fashion-MNIST R400 (supplementary D.3, Table 2)", "", f"Command: `{command}`  ", f"Note: {note}", "",
             "## Per run (test accuracy, %)", "", "| arm | mode | seed | epochs | final | best (epoch) |",
             "|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["arm"], r["mode"], r["seed"])):
        lines.append(f"| {r['arm']} | {r['mode']} | {r['seed']} | {r['epochs']}/{r['epochs_target']} | "
                     f"{r['final']:.2f} | {r['best']:.2f} ({r['best_epoch']}) |")
    lines += ["", "## Per arm and mode (complete runs only)", "",
              "| arm | mode | seeds | final mean ± sd | best mean ± sd | paper | final - paper |",
              "|---|---|---|---|---|---|---|"]
    for g in groups:
        diff = None if g["final_mean"] is None or g["paper"] is None else g["final_mean"] - g["paper"]
        lines.append(f"| {g['arm']} | {g['mode']} | {','.join(map(str, g['seeds'])) or '-'} | "
                     f"{_f(g['final_mean'])} ± {_f(g['final_std'])} | {_f(g['best_mean'])} ± {_f(g['best_std'])} | "
                     f"{_f(g['paper'])} | {_f(diff, '+.2f')} |")
    return "\n".join(lines) + "\n"


def plot(path, runs, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    labels = sorted({(r["arm"], r["mode"]) for r in runs})
    colors = {k: f"C{i}" for i, k in enumerate(labels)}
    for r in runs:
        key = (r["arm"], r["mode"])
        ax.plot(range(1, r["epochs"] + 1), r["curve"], color=colors[key], lw=1,
                label=f"{key[0]} {key[1]}" if r is next(q for q in runs if (q["arm"], q["mode"]) == key) else None)
    for mode, acc in PAPER.items():
        if any(r["mode"] == mode for r in runs):
            ax.axhline(acc, ls="--", lw=0.8, color="gray")
            ax.text(1, acc + 0.05, f"paper {mode} {acc}", fontsize=7, color="gray")
    lo = min(min(r["curve"][len(r["curve"]) // 2:]) for r in runs)
    ax.set_ylim(max(lo - 0.5, 80), max(PAPER.values()) + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=parse_run, action="append", required=True, metavar="ARM[:MODE]:SEED=DIR")
    p.add_argument("--epochs-target", type=int, default=100, help="target epochs of runs without result.json")
    p.add_argument("--note", default="", help="machine, load, what the arms are")
    p.add_argument("--command", default="", help="the training commands, for the record")
    p.add_argument("--json")
    p.add_argument("--md")
    p.add_argument("--plot")
    p.add_argument("--title", default="Fashion-MNIST R400: test accuracy per epoch")
    args = p.parse_args(argv)
    runs = []
    for arm, mode, seed, path in args.run:
        r = read_run(path, mode, args.epochs_target)
        r.update(arm=arm, seed=seed)
        runs.append(r)
    groups = summarize(runs)
    command = args.command or " ".join(["python"] + sys.argv)
    md = markdown(runs, groups, args.note, command)
    print(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "note": args.note, "paper": PAPER, "groups": groups, "runs": runs}, f,
                      indent=1)
    if args.md:
        with open(args.md, "w") as f:
            f.write(md)
    if args.plot:
        plot(args.plot, runs, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
