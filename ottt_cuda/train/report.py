"""Summarize a run directory into one JSON (for benchmarks/results/), complete or partial.

    python -m ottt_cuda.train.report OUT_DIR --command "the exact training command" -o RESULT.json

Reads OUT_DIR/metrics.jsonl (one row per finished epoch) and, if present, the run's
configuration from OUT_DIR/checkpoint.pt; marks the result partial until all epochs are done.
"""
import argparse
import json
import os
import statistics
import sys


def summarize(out_dir, command=None):
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics.jsonl in {out_dir}: has the run finished an epoch?")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    cfg = {}
    ck = os.path.join(out_dir, "checkpoint.pt")
    if os.path.isfile(ck):
        import torch
        cfg = torch.load(ck, map_location="cpu", weights_only=True)["config"]
    target = cfg.get("epochs")
    done = rows[-1]["epoch"] if rows else 0
    times = [r["epoch_time_s"] for r in rows]
    keys = ("dataset", "model", "mode", "T", "batch", "epochs", "optimizer", "lr", "schedule", "momentum", "wd",
            "dropout", "feedback_dropout", "loss_alpha", "seed", "world_size", "threads")
    return {
        "status": "complete" if target is not None and done >= target else f"partial: {done} of {target} epochs",
        "epochs_done": done,
        "test_acc": rows[-1]["test_acc"] if rows else None,
        "best_test_acc": max((r["test_acc"] for r in rows), default=None),
        "train_time_s": rows[-1]["train_time_s"] if rows else 0.0,
        "epoch_time_s_median": statistics.median(times) if times else None,
        "config": {k: cfg[k] for k in keys if k in cfg},
        "command": command,
        "per_epoch": [{k: r[k] for k in ("epoch", "train_loss", "train_acc", "test_acc", "lr", "epoch_time_s")}
                      for r in rows],
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ottt_cuda.train.report", description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--command", help="the training command, recorded so the run can be reproduced or resumed")
    p.add_argument("-o", "--output", help="write here (default: stdout)")
    a = p.parse_args(argv)
    text = json.dumps(summarize(a.out_dir, a.command), indent=2) + "\n"
    if a.output:
        with open(a.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
