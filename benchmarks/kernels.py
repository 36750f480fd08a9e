"""Kernel bandwidth: GB/s of lif_step forward/backward, lif_multistep, trace_update
and outer_accumulate_ for each backend on a device, against the equivalent eager
PyTorch expression (the 'torch' backend: ottt_cuda.reference; the fewest-pass
eager lif_step; torch.addmm_ / addr_ for outer_accumulate_ at each --batches
size, timed right after the op in the same loop; SpikingJelly's multi-step
LIFNode for lif_multistep when SpikingJelly is installed), with the bytes each
op must move counted by hand.

    python benchmarks/kernels.py                      # CPU, default sizes
    python benchmarks/kernels.py --device cuda --copy  # on a GPU, plus copy bandwidth

Every kernel is checked against the reference before it is timed. Results: a
Markdown table on stdout, JSON + CSV + PNG under benchmarks/results/.
"""
import argparse
import csv
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import _common  # noqa: E402

import ottt_cuda  # noqa: E402
from ottt_cuda import _backend, ops, reference  # noqa: E402


def _backends(device):
    names = [n for n in ("cuda", "triton", "cpu") if _backend.runs_on(n, device)]
    if device == "cpu":  # Triton on the CPU is its interpreter: correct, not a speed
        names = [n for n in names if n != "triton"]
    return names + ["torch"]


def _with(backend, fn):
    if backend.startswith("eager"):  # a plain PyTorch competitor: no backend involved
        return fn

    def run():
        ottt_cuda.set_backend(backend)
        try:
            return fn()
        finally:
            ottt_cuda.set_backend(None)
    return run


def _timed(backend, fn, device):
    """Median seconds of fn() with `backend` selected once around the whole timing:
    a user picks the backend once, so its switch is no part of an op's cost (the
    eager alternatives pay nothing for it either)."""
    if backend.startswith("eager"):
        return _common.time_call(fn, device)
    ottt_cuda.set_backend(backend)
    try:
        return _common.time_call(fn, device)
    finally:
        ottt_cuda.set_backend(None)


# The fastest plain-PyTorch way to write the surrogate backward grad * sg(z), for
# the 'eager' competitor of lif_step: one fused ATen op where one exists
# (sigmoid_backward computes grad * (1 - s) * s), in-place arithmetic elsewhere.
def _eager_sg_backward(grad, z, surrogate, alpha):
    if surrogate == "sigmoid":
        return torch.ops.aten.sigmoid_backward(grad, torch.sigmoid(z * alpha)).mul_(alpha)
    if surrogate == "atan":
        k = z * (math.pi / 2 * alpha)
        return (alpha / 2) * grad / k.mul_(k).add_(1)
    if surrogate == "triangle":
        return z.abs().mul_(-alpha).add_(1).clamp_(min=0).mul_(grad).mul_(alpha)
    return torch.where(z.abs() < 0.5 / alpha, grad * alpha, 0.0)


class _EagerSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, surrogate, alpha):
        ctx.save_for_backward(z)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return _eager_sg_backward(grad, z, ctx.surrogate, ctx.alpha), None, None


def eager_lif_step(x, v, surrogate, tau=2.0, v_th=1.0):
    """lif_step (soft reset, decay_input False) as a user would write it in eager
    PyTorch with the fewest passes: h = (1 - 1/tau) v + x, spike = H(h - v_th)."""
    h = torch.add(x, v, alpha=1 - 1 / tau)
    s = _EagerSpike.apply(h - v_th, surrogate, alpha_of(surrogate))
    return s, (h - v_th * s).detach()


def alpha_of(surrogate):
    return 4.0  # ops.lif_step's default for every surrogate


def cases(device, n, batches, out_f, in_f, T, dtype):
    """(name, bytes moved, fn(backend) -> zero-arg callable, check(backend) -> None)."""
    el = torch.empty((), dtype=dtype).element_size()
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(n, generator=gen) * 1.5).to(device, dtype)
    v = torch.rand(n, generator=gen).to(device, dtype)
    tr = torch.rand(n, generator=gen).to(device, dtype)
    gy = torch.randn(n, generator=gen).to(device, dtype)
    xs = (torch.randn(T, n // T, generator=gen) * 1.5).to(device, dtype)
    out = []

    def step_fwd(b):
        return lambda: ops.lif_step(x, v, trace=tr, trace_decay=0.5)

    # reads x, v, trace; writes spike, v_next, trace_next
    out.append(("lif_step fwd", 6 * n * el, step_fwd,
                lambda b: _check_equal(_with(b, step_fwd(b))(), _with("torch", step_fwd("torch"))())))

    def step_then_trace(b):
        def run():
            s, v_next = ops.lif_step(x, v)
            return s, v_next, ops.trace_update(tr, s, 0.5)
        return run

    # the same result in two kernels, as a synapse that updates its own trace does: lif_step reads x, v,
    # writes spike, v_next; trace_update reads the spikes again and the trace, writes the trace
    # (nn.fuse_traces makes the LIF write the next synapse's trace: the fwd row above)
    out.append(("lif_step fwd, then trace_update", 7 * n * el, step_then_trace,
                lambda b: _check_equal(_with(b, step_then_trace(b))(), _with("torch", step_fwd("torch"))())))

    for sg in reference.SURROGATES:
        def step_fwd_bwd(b, sg=sg):
            def run():
                xl = x.detach().requires_grad_()  # a fresh leaf per call, as in training
                if b == "eager":
                    s, _ = eager_lif_step(xl, v, sg)
                else:
                    s, _ = ops.lif_step(xl, v, surrogate=sg, alpha=alpha_of(sg))
                (g,) = torch.autograd.grad(s, xl, gy)
                return s.detach(), g
            return run

        # fwd reads x, v, writes s, v_next, z; bwd reads grad, z, writes grad_x
        out.append((f"lif_step fwd+bwd {sg}", 8 * n * el, step_fwd_bwd,
                    lambda b, f=step_fwd_bwd: _check_equal(_with(b, f(b))(), _with("torch", f("torch"))())))

    def trace(b):
        return lambda: (ops.trace_update(tr, x, 0.5),)

    out.append(("trace_update", 3 * n * el, trace,
                lambda b: _check_equal(_with(b, trace(b))(), _with("torch", trace("torch"))())))

    def multistep(b):
        def run():
            xx = xs.detach().requires_grad_()
            s, _ = ops.lif_multistep(xx)
            (g,) = torch.autograd.grad(s, xx, torch.ones_like(s))
            return s.detach(), g
        return run

    # fwd reads x, writes s, z; bwd reads grad, z, writes grad_x (per element, T*N)
    out.append((f"lif_multistep fwd+bwd T={T}", 6 * xs.numel() * el, multistep,
                lambda b: _check_equal(_with(b, multistep(b))(), _with("torch", multistep("torch"))())))

    for batch in batches:
        g = torch.randn(batch, out_f, generator=gen).to(device, dtype)
        a = torch.rand(batch, in_f, generator=gen).to(device, dtype)
        w = torch.zeros(out_f, in_f, device=device, dtype=dtype)

        def outer(b, g=g, a=a, w=w):
            if b == "eager addmm_":
                return lambda: (w.addmm_(g.t(), a),)
            if b == "eager addr_":
                return lambda: (w.addr_(g[0], a[0]),)
            return lambda: (ops.outer_accumulate_(w, g, a),)

        def check(b, g=g, a=a):
            w1 = torch.zeros(out_f, in_f, device=device, dtype=dtype)
            w2 = torch.zeros(out_f, in_f, device=device, dtype=dtype)
            _with(b, lambda: outer(b, a=a, g=g, w=w1)())()
            w2.addmm_(g.t(), a)
            _check_equal((w1,), (w2,))

        # grad_w read + written once, g and a read once
        out.append((f"outer_accumulate_ B={batch}", (2 * out_f * in_f + batch * (out_f + in_f)) * el, outer, check))
    return out


def spikingjelly_multistep(device, T, n, dtype):
    """SpikingJelly's multi-step LIF (neuron.LIFNode, step_mode 'm') with the
    same neuron (tau 2, soft reset, reset detached, decay_input False,
    sigmoid(4) surrogate), fwd+bwd on the same input as lif_multistep: checked
    against ottt_cuda's reference, then timed. SpikingJelly 2 has no `backend`
    argument: it picks its implementation per device itself (its torch kernel
    on CPU). None when SpikingJelly is not installed."""
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except ImportError:
        return None
    gen = torch.Generator().manual_seed(0)
    xs = (torch.randn(T, n // T, generator=gen) * 1.5).to(device, dtype)
    node = neuron.LIFNode(tau=2.0, decay_input=False, v_reset=None, detach_reset=True,
                          surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m")

    def run():
        functional.reset_net(node)
        xx = xs.detach().requires_grad_()
        s = node(xx)
        (g,) = torch.autograd.grad(s, xx, torch.ones_like(s))
        return s.detach(), g

    def ours():
        xx = xs.detach().requires_grad_()
        s, _ = _with("torch", lambda: ops.lif_multistep(xx))()
        (g,) = torch.autograd.grad(s, xx, torch.ones_like(s))
        return s.detach(), g

    _check_equal(run(), ours())
    return _common.time_call(run, device)


def vgg11_handoff_bytes(batch, hw, dtype, device):
    """Per time step of the paper's VGG-11 (sWS) at `batch` x 3 x hw x hw: (bytes of spikes a fused LIF
    spares its synapse's trace update from reading back, fused links, traced synapses)."""
    from ottt_cuda import nn as onn
    from ottt_cuda.models import vgg11_ws

    model = vgg11_ws().to(device, dtype)
    lifs = [m for m in model.modules() if isinstance(m, onn.LIF) and m._trace_link is not None]
    saved = []
    hooks = [m.register_forward_hook(lambda mod, i, out: saved.append(out.numel() * out.element_size()))
             for m in lifs]
    with torch.no_grad():
        onn.reset(model)
        model(torch.rand(batch, 3, hw, hw, device=device, dtype=dtype))
    for h in hooks:
        h.remove()
    traced = sum(1 for m in model.modules() if isinstance(m, (onn.Linear, onn.Conv2d)) and m.trace)
    return sum(saved), len(lifs), traced


def _handoff_summary(rows, n, el, device, dtype):
    """Fused (lif_step writing the trace) against lif_step + trace_update, per backend, and what it saves
    per time step in VGG-11."""
    ms = {(r["op"], r["backend"]): r["ms"] for r in rows}
    ratios = {b: ms[("lif_step fwd, then trace_update", b)] / ms[("lif_step fwd", b)]
              for (op, b) in ms if op == "lif_step fwd" and ("lif_step fwd, then trace_update", b) in ms}
    batch, hw = 16, 32
    vgg_bytes, links, traced = vgg11_handoff_bytes(batch, hw, dtype, device)
    text = (f"Trace hand-over (nn.fuse_traces): lif_step writing the next synapse's trace vs lif_step + "
            f"trace_update, {n} neurons: " + ", ".join(f"{b} {r:.2f}x" for b, r in ratios.items()) +
            f"; per fused layer and step it saves one read of the spikes ({n * el / 1e6:.1f} MB here) and one "
            f"kernel call. VGG-11 (batch {batch}, {hw}x{hw}): {links} of {traced} traced synapses are fed "
            f"directly by their LIF (through Scale), {vgg_bytes / 1e6:.1f} MB of spikes not re-read per time step.")
    return {"unfused_over_fused": ratios, "bytes_saved_per_fused_layer_step": n * el,
            "vgg11_batch16_32x32": {"bytes_saved_per_step": vgg_bytes, "fused_links": links, "traced_synapses": traced},
            "text": text}


def _eager_competitors(name):
    """The plain-PyTorch rivals timed right after the backends of case `name`, in the
    same loop (so that a drifting machine load hits both alike): the fewest-pass
    eager lif_step (eager_lif_step) for lif_step fwd+bwd; addmm_ (and addr_ at
    batch 1) for outer_accumulate_."""
    if name.startswith("lif_step fwd+bwd"):
        return ["eager"]
    if name.startswith("outer_accumulate_"):
        return ["eager addmm_"] + (["eager addr_"] if name.endswith(" B=1") else [])
    return []


def _load_average():
    """The 1/5/15-minute load averages (os.getloadavg), or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _check_equal(got, want):
    for a, b in zip(got, want):
        if a.dtype == torch.float32 and b.dtype == torch.float32 and a.shape == b.shape:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        else:
            torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)


def copy_bandwidth(device, n, dtype):
    src = torch.empty(n, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    t = _common.time_call(lambda: dst.copy_(src), device)
    return 2 * n * src.element_size() / t / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--numel", type=int, default=None, help="neurons per tensor (default 2^20 CPU, 2^26 CUDA)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 128])
    p.add_argument("--features", type=int, nargs=2, default=[512, 512], metavar=("OUT", "IN"))
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--copy", action="store_true", help="also measure device copy bandwidth (the ceiling)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 avoids OpenMP stalls on a busy machine)")
    p.add_argument("--out", default=None, help="result file stem (default benchmarks/results/kernels_<device>)")
    args = p.parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    dtype = getattr(torch, args.dtype)
    n = args.numel or (1 << 26 if device == "cuda" else 1 << 20)
    n -= n % args.T
    out_f, in_f = args.features
    backends = _backends(device)
    load_before = _load_average()

    rows = []
    for name, nbytes, make, check in cases(device, n, args.batches, out_f, in_f, args.T, dtype):
        for b in backends + _eager_competitors(name):
            check(b)  # correctness before timing
            sec = _timed(b, make(b), device)
            rows.append({"op": name, "backend": b, "ms": sec * 1e3, "GB/s": nbytes / sec / 1e9})
            print(f"  {name:28s} {b:7s} {sec * 1e3:9.3f} ms  {nbytes / sec / 1e9:8.2f} GB/s", file=sys.stderr)
    el = torch.empty((), dtype=dtype).element_size()
    sj_sec = spikingjelly_multistep(device, args.T, n, dtype)
    if sj_sec is not None:
        nbytes = 6 * n * el  # as lif_multistep above: x, s, saved state in fwd; grad, state, grad_x in bwd
        rows.append({"op": f"lif_multistep fwd+bwd T={args.T}", "backend": "spikingjelly LIFNode", "ms": sj_sec * 1e3,
                     "GB/s": nbytes / sj_sec / 1e9})
    copy_gbs = copy_bandwidth(device, n, dtype) if args.copy else None

    # speedup over the FASTEST plain-PyTorch way to do the same op, measured in
    # this run: the reference ('torch'), the fewest-pass eager lif_step
    # ('eager'), addmm_ / addr_ for outer_accumulate_ (SpikingJelly is a peer,
    # not an eager expression, and is left out of the baseline)
    base = {}
    for r in rows:
        if r["backend"] in ("torch", "eager", "eager addmm_", "eager addr_"):
            base[r["op"]] = min(base.get(r["op"], float("inf")), r["ms"])
    for r in rows:
        r["speedup_vs_eager"] = base[r["op"]] / r["ms"]

    handoff = _handoff_summary(rows, n, el, device, dtype)

    print(f"\nKernel benchmark on {device} ({args.dtype}, {n} neurons, outer {out_f}x{in_f}, "
          f"{torch.get_num_threads()} threads, load average {load_before} -> {_load_average()})\n")
    print("| op | backend | ms | GB/s | x best eager |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['op']} | {r['backend']} | {r['ms']:.3f} | {r['GB/s']:.2f} | {r['speedup_vs_eager']:.2f} |")
    if copy_gbs:
        print(f"\ndevice copy bandwidth: {copy_gbs:.1f} GB/s")
    print(f"\n{handoff['text']}")

    stem = args.out or os.path.join(_common.RESULTS, f"kernels_{device}")
    payload = {"command": _common.command_line(), "machine": _common.machine(device),
               "build_info": ottt_cuda.build_info(), "package": os.path.dirname(ottt_cuda.__file__),
               "threads": torch.get_num_threads(), "dtype": args.dtype, "numel": n,
               "features": [out_f, in_f], "T": args.T, "copy_GBps": copy_gbs, "trace_handoff": handoff,
               # other processes' load skews CPU timings: recorded so that a reader can judge a run
               "load_average_1_5_15min": {"start": load_before, "end": _load_average()}, "rows": rows}
    _common.save_json(stem + ".json", payload)
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    _plot(rows, stem + ".png", f"ottt_cuda kernels on {device} ({args.dtype})", copy_gbs)
    print(f"\nsaved {stem}.json/.csv/.png")


def _plot(rows, path, title, copy_gbs):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    opnames = list(dict.fromkeys(r["op"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(backends)
    for k, b in enumerate(backends):
        xs, ys = [], []
        for i, op in enumerate(opnames):
            for r in rows:
                if r["op"] == op and r["backend"] == b:
                    xs.append(i + k * width)
                    ys.append(r["GB/s"])
        ax.bar(xs, ys, width, label=b)
    if copy_gbs:
        ax.axhline(copy_gbs, color="k", ls="--", lw=1, label="copy bandwidth")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(opnames))])
    ax.set_xticklabels(opnames, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("GB/s (bytes the op must move / time)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
