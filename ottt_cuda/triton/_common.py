"""Host-side helpers shared by the Triton launch wrappers: argument checks
(with the messages of the compiled ops, so every backend fails alike),
surrogate ids, the op-math dtype and the neuron constants.

The constants are computed here in Python doubles exactly as
csrc/ottt_math.h's make_lif_coeffs does, handed to the kernels as float64
arguments and rounded to the op-math type inside the kernel (see
`_math.as_acc`): that reproduces the C++ `static_cast<T>(double)` of the
compiled backends.
"""
import contextlib

import torch
import triton
import triton.language as tl

# Same ids as ottt::Surrogate in csrc/ottt_math.h.
SURROGATES = {"sigmoid": 0, "atan": 1, "triangle": 2, "rectangle": 3}

# Elements per program of the element-wise kernels. Large, because the memory
# bound kernels gain nothing from small tiles on a GPU and the interpreter
# (TRITON_INTERPRET=1) pays a fixed cost per program.
BLOCK = 1024
NUM_WARPS = 4

_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def surrogate_id(name):
    try:
        return SURROGATES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"surrogate must be one of 'sigmoid', 'atan', 'triangle', 'rectangle'; got {name!r}") from None


def check_neuron_args(tau, alpha):
    if not tau > 0.0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not alpha > 0.0:
        raise ValueError(f"alpha must be > 0, got {alpha}")


def check_float(t, name):
    if t.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a floating-point tensor (float64, float32, float16 or bfloat16), "
                        f"got {t.dtype}")


def check_like(other, name, ref, ref_name):
    if other.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {list(ref.shape)}, got {list(other.shape)}")
    if other.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {other.device}")
    if other.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {other.dtype}")


def acc_dtype(dtype):
    """Op-math type: float64 stays float64, everything else computes in float32
    (at::opmath_type in the compiled kernels)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def empty0(x):
    """The placeholder for an absent output: shape [0], x's dtype and device."""
    return x.new_empty((0,))


def contiguous_or_none(t):
    return None if t is None else t.contiguous()


def lif_coeffs(tau, v_th, v_reset, decay_input):
    """(decay, in_scale, bias, v_th, v_reset, hard_reset) as make_lif_coeffs computes them."""
    hard = v_reset is not None
    tau = float(tau)
    return (1.0 - 1.0 / tau,
            1.0 / tau if decay_input else 1.0,
            float(v_reset) / tau if hard else 0.0,
            float(v_th),
            float(v_reset) if hard else 0.0,
            hard)


def in_scale(tau, decay_input):
    return 1.0 / float(tau) if decay_input else 1.0


def grid_1d(n, block=BLOCK):
    return (triton_cdiv(n, block),)


def triton_cdiv(a, b):
    return (a + b - 1) // b


def interpreted(kernel):
    """Whether triton.jit built `kernel` for the interpreter (TRITON_INTERPRET=1
    was set when the module was imported)."""
    return not isinstance(kernel, triton.runtime.JITFunction)


def interpreter_bound(kernel, n):
    """The value for a kernel's `*_STATIC: tl.constexpr` loop-bound argument.

    A loop `for i in range(N)` over a runtime argument N is what the compiled
    kernel should run (one compilation for every N), but triton 3.6's
    interpreter turns N into a one-element numpy array whose int() numpy >= 2.4
    refuses ("only 0-dimensional arrays can be converted to Python scalars").
    So the kernels loop over `N if N_STATIC is None else N_STATIC`: compiled,
    N_STATIC is None and the loop bound stays the runtime N (same code as
    before, no recompilation per N); interpreted, N_STATIC is the plain int.
    """
    return int(n) if interpreted(kernel) else None


def device_of(t, kernel):
    """Launch context for `kernel` on t's device: Triton launches on the
    current CUDA device, which need not be the tensor's on a multi-GPU host.
    Refuses, with the fix in the message, what compiled Triton cannot run."""
    if t.is_cuda:
        return torch.cuda.device(t.device)
    if interpreted(kernel):
        return contextlib.nullcontext()
    raise RuntimeError(f"the Triton backend runs CUDA tensors, got a tensor on {t.device}; for CPU tensors set "
                       "TRITON_INTERPRET=1 before triton is imported (slow, for testing) or use the 'cpu' backend")
