"""Triton backend of the ottt_cuda ops: JIT kernels that need only a GPU
driver (no nvcc at install time), or run on CPU tensors through Triton's
interpreter when TRITON_INTERPRET=1 is set before triton is imported.

Each function has the positional signature and return convention of the op of
the same name in torch.ops.ottt_cuda (absent outputs are empty [0] tensors of
x's dtype and device). Autograd and dispatch live in the caller.
"""


def available():
    """True when triton imports (it may still need a GPU or TRITON_INTERPRET=1 to run)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


if available():
    from .lif_multistep import lif_multistep_bwd, lif_multistep_fwd
    from .lif_step import lif_step_bwd, lif_step_fwd
    from .outer import outer_accumulate_
    from .trace import trace_update, trace_update_
else:
    def _unavailable(*_args, **_kwargs):
        raise RuntimeError("the Triton backend needs the 'triton' package, which is not importable here")

    lif_step_fwd = lif_step_bwd = lif_multistep_fwd = lif_multistep_bwd = _unavailable
    trace_update = trace_update_ = outer_accumulate_ = _unavailable

__all__ = ["available", "lif_step_fwd", "lif_step_bwd", "lif_multistep_fwd", "lif_multistep_bwd",
           "trace_update", "trace_update_", "outer_accumulate_"]
