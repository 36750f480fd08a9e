"""Command line: `python -m ottt_cuda.train DATASET [options]` (console script `ottt-train`).

The recipe of DATASET (ottt_cuda.train.recipes) gives every default; each option overrides one
field. Multi-GPU / multi-process: `torchrun --nproc_per_node=N -m ottt_cuda.train DATASET ...`
(--batch is the global batch, split evenly over the processes).
"""
import argparse
import json
import math
import os
import sys

import torch

from ..memory_budget import parse_bytes
from ..nn._graph import MODES as graph_modes
from ..training import TRAIN_MODES
from .recipes import DATASETS, RECIPES, ConfigError

EXIT_DIVERGED = 3  # the loss became NaN/Inf (2: bad options, data or checkpoint)
MODELS = ("r400", "r_small", "vgg11_ws", "vgg11f_ws", "nf_resnet34")
# The models whose time step train_step(cuda_graph=True) can capture (nn._graph); VGG-F's feedback
# between time steps and NF-ResNet's blocks are not in the fixed-buffer step.
GRAPH_MODELS = ("r400", "r_small", "vgg11_ws")


def parser():
    p = argparse.ArgumentParser(
        prog="ottt-train", description="Train a spiking network with OTTT (or SLTT / BPTT) on a paper recipe.",
        epilog="Defaults per data set (the paper's recipes): " + "; ".join(
            f"{d}: {r.model} T={r.T} epochs={r.epochs} batch={r.batch} {r.optimizer} lr={r.lr} wd={r.wd}"
            for d, r in RECIPES.items()))
    p.add_argument("dataset", choices=DATASETS)
    a = p.add_argument
    a("--mode", choices=TRAIN_MODES, help="training mode (default ottt_a)")
    a("--T", type=int, help="time steps per sample")
    a("--epochs", type=int)
    a("--batch", type=int, help="global batch size (divided over data-parallel processes)")
    a("--lr", type=float, help="initial learning rate")
    a("--wd", type=float, help="weight decay")
    a("--momentum", type=float, help="SGD momentum (default 0.9)")
    a("--optimizer", choices=("sgd", "adam"))
    a("--schedule", choices=("cosine", "step30", "constant"), help="cosine to 0 over the epochs, x0.1 every 30 "
                                                                   "epochs, or constant")
    a("--dropout", type=float)
    a("--feedback-dropout", choices=("on", "off"), help="recurrent models (r400, r_small): 'on' drops the hidden "
                                                        "spikes fed back to the recurrent synapse with the same "
                                                        "mask as those sent to the readout; 'off' only the latter "
                                                        "(default: the recipe's, on for fmnist)")
    a("--loss-alpha", type=float, help="weight of the MSE term: (1-a) CE + a MSE")
    a("--model", choices=MODELS)
    a("--k", type=int, help="SLTT-K: number of time steps back-propagated (default ceil(T/2))")
    a("--chunk", type=_chunk, help="OTTT_A/SLTT: compute the online gradients this many steps at a time; 'auto' "
                                   "(OTTT_A, with --memory-budget): the largest chunk that fits the budget")
    a("--memory-budget", metavar="SIZE", help="with --chunk auto: bytes a training step may keep for backward "
                                             "(state + saved tensors), e.g. 6GB (10^9), 512MiB (2^20), 1e9")
    a("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast precision")
    a("--cuda-graph", action="store_true", help="OTTT_A/SLTT on a CUDA device: capture one training time step as a "
                                                "CUDA graph and replay it T times per batch (same gradients as "
                                                "without; models " + ", ".join(GRAPH_MODELS) + "; not with --amp "
                                                "or --chunk)")
    a("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    a("--data-dir", help="where the data set lives. fmnist: the 4 IDX files; cifar10/100: torchvision's folder; "
                         "imagenet: train/<class>/*.JPEG and val/<class>/*.JPEG; cifar10dvs/dvsgesture: "
                         "SpikingJelly's dataset root (the root given to spikingjelly.datasets.CIFAR10DVS / "
                         "DVS128Gesture) holding frames_number_T_split_by_number/ (integrated by SpikingJelly with "
                         "data_type='frame', frames_number=--T, split_by='number'; CIFAR10-DVS: <class>/*.npz, "
                         "first 10%% of each class tests; DVS128-Gesture: train/ and test/<label>/*.npz), or "
                         "train.npz + test.npz (frames [N, T, 2, H, W], labels [N]). Details: "
                         "ottt_cuda/train/data.py")
    a("--out-dir", help="metrics, checkpoints, results (default runs/DATASET-MODE)")
    a("--seed", type=int, default=0)
    a("--workers", type=int, help="DataLoader worker processes")
    a("--threads", type=int, help="CPU threads for torch (torch.set_num_threads); on a busy machine 1 is often "
                                  "much faster for small models")
    a("--image-size", type=int, help="ImageNet crop size (default 224); DVS frame size SxS (default: 48 for "
                                      "CIFAR10-DVS read from SpikingJelly's 128x128 folders, as the paper; "
                                      "otherwise as stored)")
    a("--resume", metavar="PATH", help="continue from a checkpoint (e.g. OUT_DIR/checkpoint.pt), same options")
    a("--stop-after", type=int, metavar="N", help="stop after N epochs in this invocation (resume later)")
    a("--limit-batches", type=int, metavar="N", help="at most N train and N test batches per epoch (smoke tests)")
    a("--stats", action="store_true", help="firing-rate statistics on the test set: stats.json + firing_rates.png")
    a("--download", action="store_true", help="download the data set if missing (cifar10/cifar100 only)")
    a("--no-progress", action="store_true", help="no progress bar")
    return p


def _chunk(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}") from None


def _learning_rate(args, r, batch):
    """(lr, note): the paper rescales the learning rate linearly with the batch size (supplementary
    C.2: batch 1 trains with 0.1/128 for the recipe's 0.1 at 128) unless --lr is given."""
    if args.lr is not None or batch == r.batch or batch <= 0:
        return (args.lr if args.lr is not None else r.lr), None
    lr = r.lr * batch / r.batch
    return lr, (f"lr {lr:g} = {r.lr:g} x {batch}/{r.batch} (linear rescaling for --batch {batch}; "
                "--lr overrides)")


def resolve(args):
    """The run's configuration: recipe defaults overridden by the given options."""
    r = RECIPES[args.dataset]
    mode = args.mode or r.mode
    T = args.T if args.T is not None else r.T
    batch = args.batch if args.batch is not None else r.batch
    lr, lr_note = _learning_rate(args, r, batch)
    cfg = {
        "dataset": args.dataset, "mode": mode, "T": T,
        "model": args.model or r.model, "num_classes": r.num_classes, "in_channels": r.in_channels,
        "epochs": args.epochs if args.epochs is not None else r.epochs,
        "batch": batch, "lr": lr, "lr_note": lr_note,
        "wd": args.wd if args.wd is not None else r.weight_decay(mode),
        "momentum": args.momentum if args.momentum is not None else 0.9,
        "optimizer": args.optimizer or r.optimizer,
        "schedule": args.schedule or r.schedule,
        "dropout": args.dropout if args.dropout is not None else r.dropout,
        "feedback_dropout": (args.feedback_dropout == "on") if args.feedback_dropout is not None else
        r.feedback_dropout,
        "loss_alpha": args.loss_alpha if args.loss_alpha is not None else r.loss_alpha,
        "k": (args.k if args.k is not None else (T + 1) // 2) if mode == "sltt_k" else None,
        "chunk": args.chunk, "memory_budget": _budget(args, mode), "amp": None if args.amp == "none" else args.amp,
        "cuda_graph": args.cuda_graph,
        "device": args.device, "data_dir": args.data_dir,
        "out_dir": args.out_dir or f"runs/{args.dataset}-{mode}",
        "seed": args.seed, "workers": args.workers if args.workers is not None else r.workers,
        "image_size": args.image_size if args.image_size is not None else (
            r.image_size if args.dataset == "imagenet" else None),
        "resume": args.resume, "stop_after": args.stop_after, "limit_batches": args.limit_batches,
        "threads": args.threads, "stats": args.stats, "download": args.download, "progress": not args.no_progress,
    }
    for key in ("T", "epochs", "batch", "workers", "threads", "k", "chunk", "stop_after", "limit_batches", "image_size"):
        v = cfg[key]
        if v == "auto":
            continue
        if v is not None and (v < 0 or (v == 0 and key not in ("epochs", "workers"))):
            raise ConfigError(f"--{key.replace('_', '-')} must be {'>= 0' if key in ('epochs', 'workers') else '>= 1'}"
                             f", got {v}")
    _check_ranges(cfg, args)
    if cfg["chunk"] is not None and mode not in ("ottt_a", "sltt"):
        raise ConfigError(f"--chunk works with --mode ottt_a or sltt, not {mode}")
    if cfg["k"] is not None and cfg["k"] > T:
        raise ConfigError(f"--k ({cfg['k']}) must be <= T ({T})")
    return cfg


def _budget(args, mode):
    """--memory-budget in bytes; it goes with --chunk auto (OTTT_A), and --chunk auto needs it."""
    if args.chunk == "auto" and mode != "ottt_a":
        raise ConfigError(f"--chunk auto works with --mode ottt_a only, not {mode}")
    if args.memory_budget is None:
        if args.chunk == "auto":
            raise ConfigError("--chunk auto needs --memory-budget SIZE (e.g. 6GB, 512MiB, 1e9)")
        return None
    if args.chunk != "auto":
        raise ConfigError("--memory-budget is only used with --chunk auto")
    try:
        return parse_bytes(args.memory_budget, "--memory-budget")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_ranges(cfg, args):
    """Numbers out of range, options that would be silently ignored, unusable paths and devices:
    ConfigError naming the option (the CLI prints it in one line, exit status 2)."""
    def bad(option, why):
        raise ConfigError(f"{option} {why}")

    if not (math.isfinite(cfg["lr"]) and cfg["lr"] > 0):
        bad("--lr", f"must be a finite number > 0, got {cfg['lr']}")
    if not (math.isfinite(cfg["wd"]) and cfg["wd"] >= 0):
        bad("--wd", f"must be a finite number >= 0, got {cfg['wd']}")
    if not 0.0 <= cfg["momentum"] < 1.0:
        bad("--momentum", f"must be in [0, 1), got {cfg['momentum']}")
    if args.momentum is not None and cfg["optimizer"] != "sgd":
        bad("--momentum", f"applies to --optimizer sgd only (this run uses {cfg['optimizer']})")
    if not 0.0 <= cfg["dropout"] < 1.0:
        bad("--dropout", f"must be in [0, 1), got {cfg['dropout']}")
    if cfg["model"] not in ("r400", "r_small"):
        if args.feedback_dropout is not None:
            bad("--feedback-dropout", f"applies to the recurrent models r400 and r_small only (this run uses "
                                      f"{cfg['model']})")
        cfg["feedback_dropout"] = False
    if not 0.0 <= cfg["loss_alpha"] <= 1.0:
        bad("--loss-alpha", f"must be in [0, 1], got {cfg['loss_alpha']}")
    if args.k is not None and cfg["mode"] != "sltt_k":
        bad("--k", f"is only used with --mode sltt_k (this run uses {cfg['mode']})")
    if cfg["cuda_graph"]:
        _check_cuda_graph(cfg, bad)
    if cfg["device"] is not None:
        try:
            dev = torch.device(cfg["device"])
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            bad("--device", f"must be cpu, cuda or cuda:N, got {cfg['device']!r}")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            bad("--device", f"{cfg['device']}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    out = os.path.abspath(cfg["out_dir"])
    parent = out
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if os.path.exists(out) and not os.path.isdir(out):
        bad("--out-dir", f"{cfg['out_dir']} is a file, not a directory")
    if parent != out and not os.path.isdir(parent):
        bad("--out-dir", f"{cfg['out_dir']}: {parent} is a file, so the directory cannot be created")
    # --data-dir is checked by the data set's loader, whose message says how to get the data.


def _check_cuda_graph(cfg, bad):
    """--cuda-graph: what the captured step cannot do is refused here, before any data is read (the
    device is checked again once chosen: ottt_cuda.train.runner.pick_device)."""
    if cfg["mode"] not in graph_modes:
        bad("--cuda-graph", f"works with --mode ottt_a or sltt, not {cfg['mode']}")
    if cfg["amp"] is not None:
        bad("--cuda-graph", f"does not work with --amp {cfg['amp']} (the captured step runs in the model's dtype)")
    if cfg["chunk"] is not None:
        bad("--cuda-graph", f"replays one time step at a time; it does not work with --chunk {cfg['chunk']}")
    if cfg["model"] not in GRAPH_MODELS:
        bad("--cuda-graph", f"captures the models {', '.join(GRAPH_MODELS)}; {cfg['model']} holds layers the "
                            "captured step cannot replay")
    if cfg["device"] is not None and not str(cfg["device"]).startswith("cuda"):
        bad("--cuda-graph", f"needs a CUDA device, got --device {cfg['device']}")


def main(argv=None):
    """Entry point; returns the process exit status. The last line on stdout is the result JSON."""
    from .data import DataError
    from .runner import TrainingDiverged, run

    args = parser().parse_args(argv)
    try:
        cfg = resolve(args)
        result = run(cfg)
    except (DataError, ConfigError, FileNotFoundError) as e:
        print(f"ottt-train: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        # The result line still comes (complete: false, with the error), so scripts that read
        # the last stdout line see what happened; the status says it failed.
        print(f"ottt-train: error: {e}", file=sys.stderr)
        if e.result is not None:
            sys.stdout.write(json.dumps(e.result) + "\n")
            sys.stdout.flush()
        return EXIT_DIVERGED
    if result is not None:  # None on non-zero ranks: only rank 0 reports
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0
