"""Calls every op once on the GPU backends and checks it against the reference:
the GPU suite's large-tensor smoke step (--numel 67108864) and the small program
compute-sanitizer memcheck watches (--numel 4099).

    python benchmarks/gpu_ops_check.py --numel 67108864 --backends cuda triton

Inputs are small multiples of 1/8, so the forward arithmetic is exact and must
match the reference bit for bit; gradients are compared with a tolerance.
Prints one line per (op, backend) and a final "KEY:" line; exit status 1 when
any check fails.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import ottt_cuda  # noqa: E402
from ottt_cuda import ops, reference  # noqa: E402


def _dyadic(n, low, high, dtype, gen, denom=8.0):
    return torch.randint(low, high, (n,), generator=gen, device="cuda").to(dtype) / denom


def checks(n, dtype):
    """(name, run(backend) -> tensors, expected tensors, exact?) for every op."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = _dyadic(n, -16, 24, dtype, gen)
    v = _dyadic(n, -16, 8, dtype, gen)
    tr = _dyadic(n, 0, 32, dtype, gen, 16.0)
    gy = _dyadic(n, -8, 8, dtype, gen)
    T = 4
    m = n // T
    xs = x[:T * m].view(T, m)
    rows, out_f = 5, 64
    in_f = max(n // out_f, 1)
    g = _dyadic(rows * out_f, -8, 8, dtype, gen).view(rows, out_f)
    a = _dyadic(rows * in_f, 0, 4, dtype, gen, 2.0).view(rows, in_f)
    g40 = _dyadic(40 * out_f, -8, 8, dtype, gen).view(40, out_f)
    a40 = _dyadic(40 * in_f, 0, 4, dtype, gen, 2.0).view(40, in_f)

    def step(op):
        xx = x.clone().requires_grad_()
        s, vn, tn = op(xx, v, trace=tr, trace_decay=0.5)
        (gx,) = torch.autograd.grad(s, xx, gy)
        return s, vn, tn, gx

    def multi(op):
        xx = xs.clone().requires_grad_()
        s, vl = op(xx)
        (gx,) = torch.autograd.grad(s, xx, torch.ones_like(s))
        return s, vl, gx

    def outer(gg, aa):
        w = torch.zeros(out_f, in_f, device="cuda", dtype=dtype)
        ops.outer_accumulate_(w, gg, aa, 0.5)
        return (w,)

    def outer_ref(gg, aa):
        return ((0.5 * gg.double().t() @ aa.double()).to(dtype),)

    def in_place():
        t = tr.clone()
        ops.trace_update_(t, x, 0.5)
        return (t,)

    return [
        ("lif_step fwd+bwd", lambda: step(ops.lif_step), lambda: step(reference.lif_step_ref)),
        ("lif_multistep fwd+bwd T=4", lambda: multi(ops.lif_multistep), lambda: multi(reference.lif_multistep_ref)),
        ("trace_update", lambda: (ops.trace_update(tr, x, 0.5),), lambda: (reference.trace_update_ref(tr, x, 0.5),)),
        ("trace_update_", in_place, lambda: (reference.trace_update_ref(tr, x, 0.5),)),
        ("outer_accumulate_ B=5", lambda: outer(g, a), lambda: outer_ref(g, a)),
        ("outer_accumulate_ B=40", lambda: outer(g40, a40), lambda: outer_ref(g40, a40)),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--numel", type=int, default=1 << 26, help="elements per tensor")
    p.add_argument("--backends", nargs="+", default=["cuda", "triton"], choices=["cuda", "triton"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("no CUDA device is available")
    dtype = getattr(torch, args.dtype)
    print("build_info:", ottt_cuda.build_info(), flush=True)
    failed, done = [], 0
    for name, run, ref in checks(args.numel, dtype):
        want = ref()
        for backend in args.backends:
            t0 = time.perf_counter()
            try:
                ottt_cuda.set_backend(backend)
                got = run()
                torch.cuda.synchronize()
                for i, (a, b) in enumerate(zip(got, want)):
                    rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (2e-2, 2e-2)
                    torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=atol, msg=f"output {i}")
                status = "ok"
            except Exception as e:  # report every op, then fail
                status = f"FAILED: {type(e).__name__}: {str(e)[:300]}"
                failed.append(f"{name}/{backend}")
            finally:
                ottt_cuda.set_backend(None)
            done += 1
            print(f"{name:28s} {backend:7s} {time.perf_counter() - t0:7.3f} s  {status}", flush=True)
    print(f"KEY: {done - len(failed)}/{done} op checks ok at {args.numel} elements ({args.dtype})"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
