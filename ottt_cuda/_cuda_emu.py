"""The backend 'cuda_emu': the CUDA kernels of csrc/cuda/ and their host launch
code, compiled for an emulated CUDA device and run on CPU tensors.

It exists so that the code a GPU runs (argument handling, dtype dispatch, the
16-byte alignment choice, grid sizing and the kernels themselves) executes and
is tested on machines without one. It is slow and never chosen automatically:
select it with set_backend("cuda_emu") or OTTT_BACKEND=cuda_emu.

The extension ottt_cuda._C_cuda_emu is not part of the install; build it with
`python scripts/build_cuda_emu.py` in a checkout. Its module holds the controls
of the emulated machine (add_device, set_device, set_host_threads, set_seed,
last_launch); see csrc/cuda_emu/emu_runtime.h for what is emulated.
"""
import importlib.util

import torch

from . import _extension

_C = None
LOAD_ERROR = None


def _load():
    global _C, LOAD_ERROR
    if _extension.disabled():
        LOAD_ERROR = f"disabled by {_extension.DISABLE_ENV}"
        return
    if importlib.util.find_spec(__package__ + "._C_cuda_emu") is None:
        LOAD_ERROR = "not built (python scripts/build_cuda_emu.py builds it in a checkout)"
        return
    try:
        from . import _C_cuda_emu as module  # registers torch.ops.ottt_cuda_emu.*
    except Exception as exc:  # ImportError, OSError (another torch), a sanitizer runtime not preloaded
        LOAD_ERROR = f"{type(exc).__name__}: {exc}"
        return
    _C = module


_load()


def loaded() -> bool:
    return _C is not None


def module():
    """ottt_cuda._C_cuda_emu (the emulated machine's controls); raises if it is not loaded."""
    if _C is None:
        raise RuntimeError(f"the emulated CUDA extension is not loaded: {LOAD_ERROR}")
    return _C


class Ops:
    """The ops of torch.ops.ottt_cuda_emu, with the compiled ops' positional contract
    (what ops.py's autograd Functions call through `impl`)."""
    if _C is not None:
        _ns = torch.ops.ottt_cuda_emu
        lif_step_fwd = _ns.lif_step_fwd.default
        lif_step_bwd = _ns.lif_step_bwd.default
        lif_multistep_fwd = _ns.lif_multistep_fwd.default
        lif_multistep_bwd = _ns.lif_multistep_bwd.default
        trace_update = _ns.trace_update.default
        trace_update_ = _ns.trace_update_.default
        outer_accumulate_ = _ns.outer_accumulate_.default
        del _ns
