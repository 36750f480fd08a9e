"""One ImageNet-shaped training step of the paper's NF-ResNet-34: OTTT_A vs BPTT.

Defaults are the paper's ImageNet setting on one GPU's share: batch 32, T = 6,
224 x 224 images, 1000 classes, SGD (momentum 0.9, weight decay 2e-5). Per
mode: milliseconds per training step (median over --reps steps, after
--warmup) and, on CUDA, the peak of torch.cuda.max_memory_allocated during the
timed steps (with the model, its gradients and the optimizer state already
allocated, reported separately as `resident_bytes`).

Correctness is checked BEFORE any timing, on the same batch, and the run fails
when it does not hold:
- at T = 1 there is no time for the two modes to differ over, so OTTT_A's and
  BPTT's gradients of every parameter must agree (relative error of the whole
  gradient vector <= --grad-tol);
- at the timed T the forward pass is the same computation in both modes (only
  the backward differs), so their summed outputs must agree (<= --out-tol;
  loose, because in float32 a membrane rounded the other way can flip a spike).
At the paper's initialization the classifier weight and every skipinit gain are
0, which stops all gradients below the classifier at the first step; the
benchmark sets the gains to 1 and the classifier weight to N(0, 0.01), as in a
model under training, so that every layer computes a nonzero gradient (timing
does not depend on the values).

    python benchmarks/imagenet_step.py --device cuda --json results/imagenet_step_cuda.json
    python benchmarks/imagenet_step.py --device cpu --batch 1 --T 1 --image-size 64   # tiny, on a CPU
"""
import argparse
import os
import sys

MODES = ("ottt_a", "bptt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--T", type=int, default=6, help="time steps (default 6, the paper's ImageNet T)")
    p.add_argument("--image-size", type=int, default=224, help="input side length (default 224)")
    p.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per mode (default 1)")
    p.add_argument("--reps", type=int, default=3, help="timed steps per mode (default 3)")
    p.add_argument("--grad-tol", type=float, default=1e-4, help="T = 1 gradient check tolerance (default 1e-4)")
    p.add_argument("--out-tol", type=float, default=1e-2, help="forward check tolerance at T (default 1e-2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    args = p.parse_args(argv)
    for name in ("batch", "T", "image_size", "classes", "reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.image_size < 32:
        p.error(f"--image-size must be >= 32 (five stride-2 stages), got {args.image_size}")
    return args


# Heavy imports only after argument parsing, so that --help is fast.
def _imports():
    global torch, ottt_cuda, nf_resnet34, common
    import torch
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))  # run from a checkout
    sys.path.insert(0, here)
    import _common as common
    import ottt_cuda
    from ottt_cuda.models import nf_resnet34


def make_model(args, device):
    """NF-ResNet-34 as the paper's, with the skipinit gains and the classifier
    weight woken up (see the module doc), deterministic in --seed."""
    torch.manual_seed(args.seed)
    model = nf_resnet34(num_classes=args.classes)
    with torch.no_grad():
        for block in model.blocks:
            block.skipinit_gain.fill_(1.0)
        model.fc.weight.normal_(0.0, 0.01)
    return model.to(device).train()


def make_batch(args, device):
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g)  # like a normalized image
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    return x.to(device), y.to(device)


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny)).item()


def _step(model, x, y, T, mode, opt=None):
    # The paper's ImageNet loss: plain cross-entropy.
    return ottt_cuda.train_step(model, x, y, opt, T=T, mode=mode, loss_alpha=0.0)


def check(args, device, x, y):
    """The two checks of the module doc; returns their figures. TF32 is off during
    the check (restored after): with it, two convolution algorithms may round the
    same gradient differently at ~1e-3, which would hide nothing but fail the check."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _check(args, device, x, y)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _check(args, device, x, y):
    grads, outs = {}, {}
    for mode in MODES:
        model = make_model(args, device)
        _, outs[mode] = _step(model, x, y, 1, mode)
        grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters()])
        if args.T > 1:
            _, outs[mode] = _step(model, x, y, args.T, mode)
        del model
    res = {"grad_rel_err_T1": _rel(grads["ottt_a"], grads["bptt"]),
           "grad_norm_T1": grads["bptt"].norm().item(),
           f"out_rel_err_T{args.T}": _rel(outs["ottt_a"], outs["bptt"])}
    res["ok"] = bool(res["grad_norm_T1"] > 0 and res["grad_rel_err_T1"] <= args.grad_tol
                     and res[f"out_rel_err_T{args.T}"] <= args.out_tol)
    return res


def measure(args, device, x, y, mode):
    """ms per step (median) and, on CUDA, the peak memory of the timed steps."""
    import statistics
    import time

    model = make_model(args, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-5)
    for _ in range(args.warmup):
        _step(model, x, y, args.T, mode, opt)
    cuda = device.type == "cuda"
    common.sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    resident = torch.cuda.memory_allocated(device) if cuda else None
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        loss, _ = _step(model, x, y, args.T, mode, opt)
        common.sync(device)
        times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{mode}: the loss is {loss.item()}")
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
    return {"mode": mode, "ms_per_step": 1e3 * statistics.median(times), "ms_all": [1e3 * t for t in times],
            "peak_bytes": peak, "resident_bytes": resident, "loss": loss.item()}


def main(argv=None):
    args = parse_args(argv)
    _imports()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    x, y = make_batch(args, device)
    ok = check(args, device, x, y)
    print(f"check: {ok}", flush=True)
    payload = {"command": common.command_line(), "machine": common.machine(device),
               "config": {k: v for k, v in vars(args).items() if k != "json"}, "check": ok, "results": []}
    if ok["ok"]:
        for mode in MODES:
            r = measure(args, device, x, y, mode)
            payload["results"].append(r)
            mem = "n/a (not CUDA)" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f} GiB"
            print(f"{mode:7s} {r['ms_per_step']:10.1f} ms/step   peak memory {mem}", flush=True)
        by = {r["mode"]: r for r in payload["results"]}
        if by["ottt_a"]["peak_bytes"]:
            payload["bptt_over_ottt_a_peak"] = by["bptt"]["peak_bytes"] / by["ottt_a"]["peak_bytes"]
        payload["bptt_over_ottt_a_time"] = by["bptt"]["ms_per_step"] / by["ottt_a"]["ms_per_step"]
    if args.json:
        common.save_json(args.json, payload)
    if not ok["ok"]:
        print("error: the correctness check failed; nothing was timed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
