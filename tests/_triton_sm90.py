"""Compile every Triton kernel launch the package makes for an H200 (sm_90), without a GPU.

    python tests/_triton_sm90.py   (TRITON_INTERPRET unset or 0)   -> one JSON line

The tests run the Triton kernels on the CPU through Triton's interpreter, which never compiles
them: a kernel the interpreter accepts can still fail to compile for a GPU (a type the compiler
refuses, a constexpr branch only taken on CUDA, a bf16 path the interpreter widens). This script
calls the backend's own launch functions (ottt_cuda.triton) on CPU tensors with Triton's launch
replaced by a recorder, so every kernel is specialized exactly as a CUDA call would specialize it
(the same arguments, constexprs, num_warps, num_stages), then compiles each distinct
specialization ahead of time for sm_90 (triton.compile to a cubin: Triton's own ptxas, no device).
tests/test_triton_compiles_for_gpu.py runs it in a subprocess and checks the report.
"""
import contextlib
import inspect
import json
import os
import sys
import traceback

import torch

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
SURROGATES = ("sigmoid", "atan", "triangle", "rectangle")
_TYPE = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16"}


def workload(tb):
    """The launches to specialize: per dtype, every constexpr branch taken both ways (all optional
    tensors present, then all absent), every surrogate, both outer-product kernels."""
    def t(*shape, dtype):
        return torch.rand(*shape, dtype=dtype)

    for dt in DTYPES:
        x, v, tr, m = (t(37, dtype=dt) for _ in range(4))
        tb.lif_step_fwd(x, v, tr, m, 2.0, 1.0, 0.0, True, 0.5, "sigmoid", 4.0, True)
        tb.lif_step_fwd(x, None, None, None, 2.0, 1.0, None, False, 0.5, "sigmoid", 4.0, False)
        for sg in SURROGATES:
            tb.lif_step_bwd(x, v, m, 2.0, 1.0, True, sg, 4.0)
        tb.lif_step_bwd(x, v, None, 2.0, 1.0, False, "sigmoid", 4.0)
        xs = t(5, 37, dtype=dt)
        for v0, v_reset, save_h in ((v, 0.0, True), (None, None, False)):
            tb.lif_multistep_fwd(xs, v0, 2.0, 1.0, v_reset, v_reset is not None, "sigmoid", 4.0, save_h)
        for sg in SURROGATES:
            for v_reset, detach in ((None, True), (0.0, False), (0.0, True), (None, False)):
                tb.lif_multistep_bwd(xs, v, xs, 2.0, 1.0, v_reset, False, sg, 4.0, detach_reset=detach)
        tb.lif_multistep_bwd(xs, None, xs, 2.0, 1.0, None, False, "sigmoid", 4.0)
        tb.trace_update(tr, x, 0.5)
        tb.trace_update(None, x, 0.5)
        tb.trace_update_(tr, x, 0.5)
        grad_ws = [t(9, 13, dtype=dt)]
        if dt in (torch.float16, torch.bfloat16):
            grad_ws.append(t(9, 13, dtype=torch.float32))  # the widened accumulation
        for w in grad_ws:
            for n in (1, 8, 16):  # the rank-N kernel up to 8 rows, the GEMM kernel above (not float64)
                tb.outer_accumulate_(w, t(n, 9, dtype=dt), t(n, 13, dtype=dt), 0.5)


def _arg_type(value, annotation):
    """The signature type Triton's JIT gives an argument (annotations win)."""
    if annotation is not inspect.Parameter.empty and annotation is not None:
        name = getattr(annotation, "name", None) or str(annotation)
        return {"fp64": "fp64", "float64": "fp64", "fp32": "fp32", "float32": "fp32",
                "int64": "i64", "int32": "i32"}.get(name.replace("tl.", ""), name)
    if isinstance(value, torch.Tensor):
        return "*" + _TYPE[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"unexpected argument {value!r}")


def record():
    """Run the workload with launches recorded instead of made: [(kernel, args dict, options)]."""
    import triton
    from ottt_cuda import triton as tb
    from ottt_cuda.triton import _common

    launches = []

    def recorder(self, *args, grid, warmup, **kwargs):
        params = list(inspect.signature(self.fn).parameters.values())
        options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound = dict(zip((p.name for p in params), args))
        bound.update(kwargs)
        launches.append((self, params, bound, options))

    run = triton.runtime.JITFunction.run
    device_of = _common.device_of
    triton.runtime.JITFunction.run = recorder
    _common.device_of = lambda t, kernel: contextlib.nullcontext()
    try:
        workload(tb)
    finally:
        triton.runtime.JITFunction.run = run
        _common.device_of = device_of
    return launches


def specialization(params, bound):
    """(signature, constexprs) for triton.compile's ASTSource, as the JIT would build them."""
    import triton.language as tl
    signature, constexprs = {}, {}
    for p in params:
        value = bound[p.name]
        if p.annotation is tl.constexpr or p.annotation == "tl.constexpr":
            signature[p.name] = "constexpr"
            constexprs[p.name] = value
        else:
            signature[p.name] = _arg_type(value, p.annotation)
    return signature, constexprs


def _key(value):
    return str(value) if not isinstance(value, (int, float, str, bool, type(None))) else value


def main():
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("run without TRITON_INTERPRET=1: the interpreter's kernels do not compile")
    import triton
    from triton.backends.compiler import GPUTarget

    target = GPUTarget("cuda", 90, 32)
    seen, results = set(), []
    for kernel, params, bound, options in record():
        signature, constexprs = specialization(params, bound)
        key = (kernel.fn.__name__, tuple(sorted(signature.items())),
               tuple(sorted((k, _key(v)) for k, v in constexprs.items())), tuple(sorted(options.items())))
        if key in seen:
            continue
        seen.add(key)
        entry = {"kernel": kernel.fn.__name__, "signature": signature,
                 "constexprs": {k: _key(v) for k, v in constexprs.items()}, "options": options}
        try:
            src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
            compiled = triton.compile(src, target=target, options=options)
            entry["cubin_bytes"] = len(compiled.asm["cubin"])
            entry["ok"] = entry["cubin_bytes"] > 0
        except Exception as e:  # report every failure, not only the first
            entry["ok"] = False
            entry["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()[-2000:]
        results.append(entry)
    json.dump({"triton": triton.__version__, "target": "cuda sm_90", "compiled": results}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
