"""One training run: data, model, optimizer, epochs, evaluation, logging, checkpoints, stats."""
import csv
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch

from .. import models
from ..training import NonFiniteLossError, evaluate, train_step
from . import checkpoint, data, distributed, stats
from .progress import Progress
from .recipes import ConfigError


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf: the run stopped before the bad optimizer step, the last
    checkpoint (end of the previous epoch) is untouched. `result` is the run's result dict
    (complete: false) on rank 0, None elsewhere."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


DIVERGED_HINT = ("--amp fp16 overflows more easily than bf16 or fp32; check the data for NaN/Inf")


def log(msg, d):
    if d.main:
        print(msg, file=sys.stderr, flush=True)


def build_model(cfg, sample_shape):
    """The recipe's model; input sizes come from one sample of the data."""
    name, nc, p = cfg["model"], cfg["num_classes"], cfg["dropout"]
    in_ch = sample_shape[-3] if len(sample_shape) >= 3 else 1
    if name in ("r400", "r_small"):
        hidden = 400 if name == "r400" else 64
        return models.r400(nc, in_features=math.prod(sample_shape[-3:]), hidden=hidden, dropout=p,
                           feedback_dropout=bool(cfg.get("feedback_dropout", False)))
    if name == "vgg11_ws":
        return models.vgg11_ws(nc, in_channels=in_ch, dropout=p)
    if name == "vgg11f_ws":
        return models.vgg11f_ws(nc, in_channels=in_ch, dropout=p)
    if name == "nf_resnet34":
        if p:
            raise ConfigError("nf_resnet34 has no dropout; pass --dropout 0")
        return models.nf_resnet34(nc, in_channels=in_ch)
    raise ConfigError(f"unknown model {name!r}")


def build_optimizer(cfg, model):
    params = [q for q in model.parameters() if q.requires_grad]
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["wd"])
    else:
        opt = torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["wd"])
    # Stepped once per epoch (the paper's code anneals per epoch).
    if cfg["schedule"] == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg["epochs"]), eta_min=0.0)
    elif cfg["schedule"] == "step30":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    return opt, sched


def pick_device(cfg, d):
    name = cfg["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda but torch sees no CUDA device")
        if d.enabled or dev.index is None:
            dev = torch.device("cuda", d.local_rank if d.enabled else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if cfg.get("cuda_graph") and dev.type != "cuda":
        raise ConfigError(f"--cuda-graph needs a CUDA device; torch sees none, so this run would be on {dev.type}")
    return dev


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def make_loaders(cfg, train_set, test_set, d, device):
    local_batch = cfg["batch"] // d.world
    if cfg["batch"] % d.world:
        raise ConfigError(f"--batch {cfg['batch']} must be divisible by the number of processes ({d.world})")
    gen = torch.Generator()
    gen.manual_seed(cfg["seed"])
    common = dict(num_workers=cfg["workers"], pin_memory=device.type == "cuda",
                  persistent_workers=False)
    if d.enabled:
        sampler = torch.utils.data.DistributedSampler(train_set, d.world, d.rank, shuffle=True, seed=cfg["seed"],
                                                      drop_last=True)
        train = torch.utils.data.DataLoader(train_set, local_batch, sampler=sampler, generator=gen,
                                            drop_last=True, **common)
        # Evaluation shards without padding (rank r takes r, r+world, ...): the summed counts are exact.
        test_set = torch.utils.data.Subset(test_set, range(d.rank, len(test_set), d.world))
    else:
        sampler = None
        train = torch.utils.data.DataLoader(train_set, local_batch, shuffle=True, generator=gen, drop_last=False,
                                            **common)
    test = torch.utils.data.DataLoader(test_set, max(1, local_batch), shuffle=False, **common)
    return train, test, sampler, gen


def _limited(loader, n):
    for i, batch in enumerate(loader):
        if n is not None and i >= n:
            return
        yield batch


def _to_input(x, sequence, device):
    x = x.to(device, non_blocking=True)
    # DVS batches arrive [B, T, C, H, W]; train_step and evaluate take sequences time-major.
    return x.transpose(0, 1).contiguous() if sequence else x


def run_eval(model, loader, cfg, device, d, sequence, counter=None):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in _limited(loader, cfg["limit_batches"]):
            x, y = _to_input(x, sequence, device), y.to(device)
            out = evaluate(model, x, cfg["T"], sequence=sequence, amp=cfg["amp"])
            correct += int((out.argmax(1) == y).sum())
            total += y.numel()
    if d.enabled:
        correct, total = distributed.all_reduce_sum([correct, total], device)
    return correct / total if total else 0.0


def run_epoch(model, loader, optimizer, scaler, cfg, device, sequence, epoch, d):
    model.train()
    n_batches = len(loader) if cfg["limit_batches"] is None else min(len(loader), cfg["limit_batches"])
    bar = Progress(n_batches, f"epoch {epoch + 1}/{cfg['epochs']}", enabled=cfg["progress"] and d.main)
    loss_sum = correct = total = 0.0
    for i, (x, y) in enumerate(_limited(loader, cfg["limit_batches"])):
        x, y = _to_input(x, sequence, device), y.to(device)
        try:
            loss, out = train_step(model, x, y, optimizer, T=cfg["T"], mode=cfg["mode"],
                                   loss_alpha=cfg["loss_alpha"], chunk=cfg["chunk"], k=cfg["k"], amp=cfg["amp"],
                                   scaler=scaler, sequence=sequence, check_finite=True,
                                   memory_budget=cfg.get("memory_budget"), cuda_graph=cfg.get("cuda_graph", False))
        except NonFiniteLossError as e:
            bar.close()
            raise TrainingDiverged(f"non-finite loss: stopped at epoch {epoch + 1}, step {i + 1} of {n_batches}: "
                                   f"{e.reason}; nothing of this epoch was saved (the last checkpoint is the end of "
                                   f"the last good epoch). Hint: lower --lr (now {cfg['lr']:g}); {DIVERGED_HINT}"
                                   ) from None
        _report_chunk(model, d)
        b = y.numel()
        loss_sum += float(loss) * b
        correct += int((out.argmax(1) == y).sum())
        total += b
        bar.update(loss=loss_sum / total, acc=correct / total)
    bar.close()
    if d.enabled:
        loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total], device)
    return loss_sum / max(total, 1), correct / max(total, 1), bar.n, bar.rate()


def _report_chunk(model, d):
    """--chunk auto: log the chunk the memory budget allows, when it is chosen or changes
    (a new input shape, e.g. the last partial batch)."""
    plan = model.__dict__.get("ottt_chunk_plan")
    if plan is not None and model.__dict__.get("_ottt_reported_plan") != plan:
        model.__dict__["_ottt_reported_plan"] = plan
        log(str(plan), d)


class MetricsWriter:
    FIELDS = ("epoch", "train_loss", "train_acc", "test_acc", "best_test_acc", "lr", "epoch_time_s",
              "train_time_s", "steps_per_s")

    def __init__(self, out_dir):
        self.jsonl = os.path.join(out_dir, "metrics.jsonl")
        self.csv = os.path.join(out_dir, "metrics.csv")

    def append(self, row):
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        new = not os.path.exists(self.csv)
        with open(self.csv, "a", newline="") as f:
            w = csv.DictWriter(f, self.FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def _gather_rng(gen, d):
    state = checkpoint.rng_state(gen)
    if not d.enabled:
        return [state]
    states = [None] * d.world
    torch.distributed.all_gather_object(states, state)
    return states


def run(cfg):
    """Train as configured; returns the result dict on rank 0 (None on other ranks)."""
    dev_type = torch.device(cfg["device"]).type if cfg["device"] else ("cuda" if torch.cuda.is_available() else "cpu")
    d = distributed.init(dev_type)
    try:
        result = _run(cfg, d)
        distributed.finish(d)
        return result
    finally:
        distributed.shutdown(d)


def _run(cfg, d):
    if cfg.get("lr_note"):  # the first line: the learning rate is not the recipe's
        log(cfg["lr_note"], d)
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg, d)
    cfg = dict(cfg, world_size=d.world)
    # Each rank draws its own dropout masks / augmentations; rank 0 = the single-process run.
    seed_all(cfg["seed"] + d.rank)
    sequence = cfg["dataset"] in data.SEQUENCE_DATASETS
    download = cfg["download"]
    if download and d.enabled:
        # Rank 0 downloads while the others wait; then every rank reads the files.
        if d.main:
            data.build(cfg["dataset"], cfg["data_dir"], download=True)
        torch.distributed.barrier()
        download = False
    train_set, test_set = data.build(cfg["dataset"], cfg["data_dir"], download=download,
                                     T=cfg["T"] if sequence else None, image_size=cfg["image_size"],
                                     num_classes=cfg["num_classes"])
    sample_shape = tuple(train_set[0][0].shape)
    model = build_model(cfg, sample_shape).to(device)
    if d.enabled:
        distributed.broadcast_model(model)
    base_opt, sched = build_optimizer(cfg, model)
    optimizer = distributed.GradSync(base_opt, d.world) if d.enabled else base_opt
    scaler = distributed.make_scaler(device.type, d, optimizer) if cfg["amp"] == "fp16" else None
    train_loader, test_loader, sampler, gen = make_loaders(cfg, train_set, test_set, d, device)

    out_dir = cfg["out_dir"]
    if d.main:
        os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    writer = MetricsWriter(out_dir)
    start_epoch, best, train_time, test_acc, epoch_times = 0, 0.0, 0.0, None, []
    if cfg["resume"]:
        ck = checkpoint.load(cfg["resume"])
        checkpoint.check_config(ck["config"], cfg)
        try:
            model.load_state_dict(ck["model"])
            base_opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise checkpoint.CheckpointError(f"--resume: {cfg['resume']} does not fit this model/optimizer "
                                             f"(another data shape?): {first}") from None
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        start_epoch, best, train_time = ck["epoch"] + 1, ck["best_test_acc"], ck["train_time_s"]
        test_acc, epoch_times = ck["test_acc"], list(ck.get("epoch_times", []))
        checkpoint.set_rng_state(ck["rng"][d.rank], gen)
        log(f"resumed from {cfg['resume']} after epoch {start_epoch} (best test acc {best:.4f})", d)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{cfg['dataset']}: {cfg['model']} ({n_params / 1e6:.2f}M params) mode={cfg['mode']} T={cfg['T']} "
        f"batch={cfg['batch']} x{d.world} proc, {len(train_set)} train / {len(test_set)} test, device {device}", d)

    ran = 0
    for epoch in range(start_epoch, cfg["epochs"]):
        if cfg["stop_after"] is not None and ran >= cfg["stop_after"]:
            break
        if sampler is not None:
            sampler.set_epoch(epoch)
        lr = base_opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        try:
            tr_loss, tr_acc, steps, rate = run_epoch(model, train_loader, optimizer, scaler, cfg, device, sequence,
                                                     epoch, d)
        except TrainingDiverged as e:
            # Nothing of this epoch is saved: checkpoint.pt stays the end of the last good epoch.
            if not d.main:
                raise
            result = _result(cfg, d, device, out_dir, ckpt_path, start_epoch + ran, test_acc, best, train_time, model,
                             epoch_times)
            result["complete"], result["error"] = False, str(e)
            _write_result(out_dir, result)
            raise TrainingDiverged(str(e), result) from None
        t_train = time.perf_counter() - t0
        sched.step()
        test_acc = run_eval(model, test_loader, cfg, device, d, sequence)
        epoch_time = time.perf_counter() - t0
        train_time += t_train
        epoch_times.append(epoch_time)
        best = max(best, test_acc)
        ran += 1
        row = {"epoch": epoch + 1, "train_loss": tr_loss, "train_acc": tr_acc, "test_acc": test_acc,
               "best_test_acc": best, "lr": lr, "epoch_time_s": epoch_time, "train_time_s": train_time,
               "steps_per_s": rate}
        log(f"epoch {epoch + 1}/{cfg['epochs']} loss {tr_loss:.4f} train_acc {tr_acc:.4f} test_acc {test_acc:.4f} "
            f"best {best:.4f} lr {lr:.5f} {epoch_time:.1f}s ({rate:.2f} steps/s)", d)
        rng = _gather_rng(gen, d)
        if d.main:
            writer.append(row)
            checkpoint.save(ckpt_path, {
                "config": {k: v for k, v in cfg.items() if not isinstance(v, torch.device)},
                "epoch": epoch, "model": model.state_dict(), "optimizer": base_opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                "best_test_acc": best, "test_acc": test_acc, "train_time_s": train_time,
                "epoch_times": epoch_times, "rng": rng})
    epochs_done = start_epoch + ran
    if test_acc is None:  # nothing trained: report the model as it is
        test_acc = run_eval(model, test_loader, cfg, device, d, sequence)
        best = max(best, test_acc)

    stats_summary = None
    if cfg["stats"]:
        counter = stats.SpikeCounter(model)
        with counter:
            run_eval(model, test_loader, cfg, device, d, sequence)
        if d.enabled:
            counter.set_totals(distributed.all_reduce_sum(counter.totals(), device))
        stats_summary = counter.summary(cfg["T"])
        if d.main:
            paths = stats.write(stats_summary, out_dir, f"{cfg['dataset']} {cfg['model']} {cfg['mode']}")
            log(f"firing rate {stats_summary['firing_rate']:.4f}, {stats_summary['spikes_per_neuron']:.3f} "
                f"spikes/neuron over T={cfg['T']}: {', '.join(paths)}", d)

    if not d.main:
        return None
    result = _result(cfg, d, device, out_dir, ckpt_path, epochs_done, test_acc, best, train_time, model, epoch_times)
    if stats_summary is not None:
        result["firing_rate"] = stats_summary["firing_rate"]
        result["spikes_per_neuron"] = stats_summary["spikes_per_neuron"]
    _write_result(out_dir, result)
    return result


def _result(cfg, d, device, out_dir, ckpt_path, epochs_done, test_acc, best, train_time, model, epoch_times):
    return {"dataset": cfg["dataset"], "mode": cfg["mode"], "model": cfg["model"], "T": cfg["T"],
            "epochs": epochs_done, "epochs_target": cfg["epochs"], "complete": epochs_done >= cfg["epochs"],
            "test_acc": test_acc, "best_test_acc": best, "train_time_s": train_time,
            "epoch_time_s": (sum(epoch_times) / len(epoch_times)) if epoch_times else None,
            "batch": cfg["batch"], "lr": cfg["lr"], "wd": cfg["wd"], "world_size": d.world,
            "chunk": _chosen_chunk(cfg, model), "cuda_graph": bool(cfg.get("cuda_graph")),
            "device": str(device), "out_dir": out_dir,
            "checkpoint": ckpt_path if os.path.exists(ckpt_path) else None}


def _chosen_chunk(cfg, model):
    plan = model.__dict__.get("ottt_chunk_plan") if cfg.get("chunk") == "auto" else None
    return plan.chunk if plan is not None else cfg.get("chunk")


def _write_result(out_dir, result):
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
