"""Per-element LIF math for the Triton kernels: the Triton twin of
csrc/ottt_math.h. The formulas and their evaluation order follow that header
term by term, so that the interpreter reproduces the CPU kernels bit for bit
(a GPU build may contract a*b+c into an FMA and use approximate exp: a few
ulp, never a different formula).

`ACC` is the op-math dtype (tl.float32 or tl.float64) as a constexpr.
"""
import triton
import triton.language as tl


@triton.jit
def as_acc(value, ACC: tl.constexpr):
    # Scalars arrive as float64 kernel arguments (compiled) or Python floats
    # (interpreter); tl.full rounds either to the op-math type once, like the
    # C++ static_cast<T>(double) of the neuron constants.
    return tl.full([], value, ACC)


@triton.jit
def div(a, b, ACC: tl.constexpr):
    # Correctly rounded division: a plain fp32 '/' on NVIDIA lowers to an
    # approximate divide; the C++ kernels divide exactly. fp64 '/' is exact.
    if ACC == tl.float32:
        r = tl.math.div_rn(a, b)
    else:
        r = a / b
    return r


@triton.jit
def charge(v, x, decay, in_scale, bias):
    return decay * v + in_scale * x + bias


@triton.jit
def fire(h, v_th, ACC: tl.constexpr):
    return (h >= v_th).to(ACC)


@triton.jit
def fire_from_z(z, ACC: tl.constexpr):
    # The same decision from z = h - v_th, which the kernels save for backward
    # instead of h: rounding z to fp16/bf16 never flips its sign, so backward
    # recovers exactly the spikes forward fired (ottt::fire_from_z).
    return (z >= 0.0).to(ACC)


@triton.jit
def reset(h, s, v_th, v_reset, HARD_RESET: tl.constexpr):
    if HARD_RESET:
        r = tl.where(s != 0.0, v_reset, h)
    else:
        r = h - v_th * s
    return r


@triton.jit
def surrogate_grad(z, alpha, SURROGATE: tl.constexpr, ACC: tl.constexpr):
    """sg(z), z = h - v_th; ids as ottt::Surrogate (0 sigmoid, 1 atan, 2 triangle, 3 rectangle)."""
    if SURROGATE == 0:
        sg = div(1.0, 1.0 + tl.exp(-alpha * z), ACC)
        r = alpha * sg * (1.0 - sg)
    elif SURROGATE == 1:
        k = as_acc(1.5707963267948966, ACC) * alpha * z
        r = div(alpha, 2.0 * (1.0 + k * k), ACC)
    elif SURROGATE == 2:
        t = 1.0 - alpha * tl.abs(z)
        r = tl.where(t > 0.0, alpha * t, 0.0)
    else:
        r = tl.where(tl.abs(z) < div(as_acc(0.5, ACC), alpha, ACC), alpha, 0.0)
    return r
