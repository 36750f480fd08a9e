"""Instantaneous weight gradient: grad_w[out, in] += alpha * g[N, out]^T a[N, in]
(g and a flattened over their leading dimensions), accumulated straight into
the gradient buffer so OTTT_A sums the T steps without temporaries.

Two kernels, split at N = SMALL_N rows (the compiled backends' kOuterSmallBatch):
- N <= 8 (online OTTT, batch 1 to 8): a rank-N update. Each program owns a
  2-D tile of grad_w, loops over the N rows summing g[b, o] * a[b, i] in
  op-math precision in row order (the CPU kernel's order), and reads and
  writes its tile of grad_w once. A GEMM launch would waste its K dimension here.
- N > 8: a tiled GEMM with tl.dot over K = N, adding alpha * acc to the grad_w
  tile at the end. Chosen over addmm_ because it accumulates fp16/bf16 inputs
  straight into an fp32 grad_w on tensor cores (addmm_ needs both inputs
  widened to fp32 copies first) and runs under TRITON_INTERPRET=1 like the
  rest of the backend. fp32 inputs use input_precision="ieee": TF32 would
  silently drop mantissa bits relative to the other backends. float64 takes
  torch's addmm_ (beta = 1, no temporary) instead, as the CPU backend does:
  float64 is the gradient-check dtype, where cuBLAS DGEMM's reliability beats
  a rarely used Triton path (fp64 tl.dot compiles for sm_90, but has never
  run on a GPU in this project), and speed does not matter.
"""
import math

import torch
import triton
import triton.language as tl

from . import _common as C
from ._math import as_acc

SMALL_N = 8

_SMALL_BLOCK_O = 32
_SMALL_BLOCK_I = 128

_GEMM_BLOCK_M = 64   # rows of grad_w (out)
_GEMM_BLOCK_N = 64   # columns of grad_w (in)
_GEMM_BLOCK_K = 32   # reduction over the N samples
_GEMM_GROUP_M = 8


@triton.jit
def _outer_small_kernel(w_ptr, g_ptr, a_ptr, N, OUT, IN, stride_wo, stride_wi, alpha: tl.float64,
                        N_STATIC: tl.constexpr, ACC: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr):
    # 1-D grid (no 65535 limit on a second axis), columns fastest so
    # neighbouring programs share rows of g.
    pid = tl.program_id(0)
    n_i = tl.cdiv(IN, BLOCK_I)
    offs_o = (pid // n_i).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_i = (pid % n_i).to(tl.int64) * BLOCK_I + tl.arange(0, BLOCK_I)
    mo = offs_o < OUT
    mi = offs_i < IN
    acc = tl.zeros([BLOCK_O, BLOCK_I], ACC)
    pg = g_ptr + offs_o
    pa = a_ptr + offs_i
    # N_STATIC: N for the interpreter only (see _common.interpreter_bound).
    for _b in range(N if N_STATIC is None else N_STATIC):
        gv = tl.load(pg, mask=mo, other=0.0).to(ACC)
        av = tl.load(pa, mask=mi, other=0.0).to(ACC)
        acc += gv[:, None] * av[None, :]
        pg += OUT
        pa += IN
    wmask = mo[:, None] & mi[None, :]
    pw = w_ptr + offs_o[:, None] * stride_wo + offs_i[None, :] * stride_wi
    w = tl.load(pw, mask=wmask, other=0.0).to(ACC)
    tl.store(pw, (w + as_acc(alpha, ACC) * acc).to(w_ptr.dtype.element_ty), mask=wmask)


@triton.jit
def _outer_gemm_kernel(w_ptr, g_ptr, a_ptr, N, OUT, IN, stride_wo, stride_wi, alpha: tl.float64,
                       N_STATIC: tl.constexpr, ACC: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr):
    # Grouped tile order: GROUP_M consecutive programs sweep down a column
    # band of grad_w, so the tiles of a they read stay in L2.
    pid = tl.program_id(0)
    num_m = tl.cdiv(OUT, BLOCK_M)
    num_n = tl.cdiv(IN, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m

    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    mm = offs_m < OUT
    mn = offs_n < IN
    acc = tl.zeros([BLOCK_M, BLOCK_N], ACC)
    # N_STATIC: N for the interpreter only (see _common.interpreter_bound).
    for k0 in range(0, N if N_STATIC is None else N_STATIC, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mk = offs_k < N
        rows = offs_k.to(tl.int64)
        # g^T tile [BLOCK_M, BLOCK_K]: element (o, k) is g[k, o].
        gt = tl.load(g_ptr + rows[None, :] * OUT + offs_m[:, None], mask=mm[:, None] & mk[None, :], other=0.0)
        at = tl.load(a_ptr + rows[:, None] * IN + offs_n[None, :], mask=mk[:, None] & mn[None, :], other=0.0)
        if UPCAST:
            # Interpreter only (see _INTERPRETED): bf16 products are exact in
            # fp32, so this changes nothing but the summation order.
            gt = gt.to(tl.float32)
            at = at.to(tl.float32)
        acc = tl.dot(gt, at, acc, input_precision=DOT_PRECISION, out_dtype=ACC)
    wmask = mm[:, None] & mn[None, :]
    pw = w_ptr + offs_m[:, None] * stride_wo + offs_n[None, :] * stride_wi
    w = tl.load(pw, mask=wmask, other=0.0).to(ACC)
    tl.store(pw, (w + as_acc(alpha, ACC) * acc).to(w_ptr.dtype.element_ty), mask=wmask)


# Triton's interpreter (TRITON_INTERPRET=1, read when triton.jit decorates)
# keeps bfloat16 blocks as raw uint16 bits and its tl.dot multiplies those bit
# patterns as integers; the GEMM kernel therefore widens bf16 tiles to fp32
# before tl.dot there. Compiled kernels use bf16 tensor cores.
_INTERPRETED = C.interpreted(_outer_gemm_kernel)


def _check(grad_w, g, a):
    C.check_float(grad_w, "grad_w")
    C.check_float(g, "g")
    C.check_float(a, "a")
    if grad_w.dim() != 2:
        raise ValueError(f"grad_w must be 2-D [out, in], got shape {list(grad_w.shape)}")
    if g.dim() < 1 or a.dim() < 1:
        raise ValueError("g and a must have at least one dimension")
    if g.shape[-1] != grad_w.shape[0]:
        raise ValueError(f"g's last dimension must equal grad_w.size(0) = {grad_w.shape[0]}, "
                         f"got g of shape {list(g.shape)}")
    if a.shape[-1] != grad_w.shape[1]:
        raise ValueError(f"a's last dimension must equal grad_w.size(1) = {grad_w.shape[1]}, "
                         f"got a of shape {list(a.shape)}")
    if g.shape[:-1] != a.shape[:-1]:
        raise ValueError(f"g and a must have the same leading (batch) dimensions, got {list(g.shape)} "
                         f"and {list(a.shape)}")
    if g.dtype != a.dtype:
        raise TypeError(f"g and a must have the same dtype, got {g.dtype} and {a.dtype}")
    if g.device != grad_w.device or a.device != grad_w.device:
        raise ValueError(f"grad_w, g and a must be on one device, got {grad_w.device}, {g.device}, {a.device}")
    same = grad_w.dtype == g.dtype
    widened = grad_w.dtype == torch.float32 and g.dtype in (torch.float16, torch.bfloat16)
    if not (same or widened):
        raise TypeError("grad_w must have the dtype of g and a, or float32 when they are float16/bfloat16; "
                        f"got grad_w {grad_w.dtype} and g {g.dtype}")


def outer_accumulate_(grad_w, g, a, alpha):
    """grad_w += alpha * g.reshape(-1, out).T @ a.reshape(-1, in), in place; returns None."""
    _check(grad_w, g, a)
    out_f, in_f = grad_w.shape
    # Explicit row count: reshape(-1, 0) is ambiguous for a zero-width grad_w.
    n = math.prod(g.shape[:-1])
    g2 = g.reshape(n, out_f).contiguous()
    a2 = a.reshape(n, in_f).contiguous()
    if n == 0 or grad_w.numel() == 0:
        return None
    alpha = float(alpha)
    # The kernels address grad_w through its strides, so a strided buffer is
    # updated where it lies, without a contiguous copy and a copy back.
    if n <= SMALL_N:
        grid = (C.triton_cdiv(out_f, _SMALL_BLOCK_O) * C.triton_cdiv(in_f, _SMALL_BLOCK_I),)
        with C.device_of(grad_w, _outer_small_kernel):
            _outer_small_kernel[grid](
                grad_w, g2, a2, n, out_f, in_f, grad_w.stride(0), grad_w.stride(1), alpha,
                N_STATIC=C.interpreter_bound(_outer_small_kernel, n), ACC=C.acc_dtype(grad_w.dtype), BLOCK_O=_SMALL_BLOCK_O, BLOCK_I=_SMALL_BLOCK_I,
                num_warps=C.NUM_WARPS)
        return None
    if g2.dtype == torch.float64:
        grad_w.addmm_(g2.t(), a2, beta=1, alpha=alpha)
        return None
    grid = (C.triton_cdiv(out_f, _GEMM_BLOCK_M) * C.triton_cdiv(in_f, _GEMM_BLOCK_N),)
    with C.device_of(grad_w, _outer_gemm_kernel):
        _outer_gemm_kernel[grid](
            grad_w, g2, a2, n, out_f, in_f, grad_w.stride(0), grad_w.stride(1), alpha,
            N_STATIC=C.interpreter_bound(_outer_gemm_kernel, n),
            # input_precision only matters for fp32 operands ("ieee": no TF32
            # rounding); fp16/bf16 products are exact on tensor cores either way.
            ACC=tl.float32, DOT_PRECISION="ieee" if g2.dtype == torch.float32 else "tf32",
            UPCAST=_INTERPRETED and g2.dtype == torch.bfloat16,
            BLOCK_M=_GEMM_BLOCK_M, BLOCK_N=_GEMM_BLOCK_N, BLOCK_K=_GEMM_BLOCK_K, GROUP_M=_GEMM_GROUP_M,
            num_warps=C.NUM_WARPS, num_stages=3)
    return None
