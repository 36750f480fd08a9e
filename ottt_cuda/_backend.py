"""Which implementation runs an op: 'cuda' (compiled CUDA kernels), 'triton',
'cpu' (compiled C++ kernels), 'torch' (the pure-PyTorch reference) or
'cuda_emu' (the CUDA kernels on an emulated device, for CPU tensors: see
ottt_cuda._cuda_emu; never chosen automatically).

The best available backend is picked per device type. `set_backend(name)` or
the environment variable OTTT_BACKEND forces one; a forced backend that cannot
run on a tensor's device raises an error naming both (never a silent switch).
"""
import functools
import os

import torch

from . import _cuda_emu, _extension

BACKENDS = ("cuda", "triton", "cpu", "torch", "cuda_emu")

_forced = None


def _check_name(name, source="set_backend(name)"):
    if not isinstance(name, str):
        raise TypeError(f"{source}: backend must be a string, one of {BACKENDS}, or None; got {type(name).__name__}")
    if name not in BACKENDS:
        raise ValueError(f"{source}: backend must be one of {BACKENDS} or None, got {name!r}")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _triton_runs_on(device_type: str) -> bool:
    if not triton_available():
        return False
    # On the CPU Triton only runs through its interpreter (TRITON_INTERPRET=1,
    # set before triton is imported).
    return device_type == "cuda" or os.environ.get("TRITON_INTERPRET", "0") == "1"


def runs_on(name: str, device_type: str) -> bool:
    """Whether backend `name` can run on tensors of `device_type` in this process."""
    _check_name(name, "runs_on(name)")
    if name == "torch":
        return True
    if name == "cpu":
        return device_type == "cpu" and _extension.cpu_compiled()
    if name == "cuda":
        return device_type == "cuda" and _extension.cuda_compiled()
    if name == "cuda_emu":
        return device_type == "cpu" and _cuda_emu.loaded()
    return _triton_runs_on(device_type)


def set_backend(name=None):
    """Force backend `name` for every op (None restores the automatic choice)."""
    global _forced
    if name is not None:
        _check_name(name)
    _forced = name


def _default(device_type: str) -> str:
    order = ("cuda", "triton", "torch") if device_type == "cuda" else ("cpu", "torch")
    return next(n for n in order if runs_on(n, device_type))


def _device_type(device):
    if isinstance(device, torch.device):
        return device.type
    if isinstance(device, str):
        try:
            return torch.device(device).type
        except RuntimeError:
            raise ValueError(f"device must be a torch.device or a device string such as 'cpu' or 'cuda:0', "
                             f"got {device!r}") from None
    raise TypeError(f"device must be a torch.device or a string, got {type(device).__name__}")


def get_backend(device="cpu") -> str:
    """The backend ops use for tensors on `device` (a torch.device or a string)."""
    device_type = _device_type(device)
    if _forced is not None:
        name, source = _forced, "set_backend"
    else:
        name, source = os.environ.get("OTTT_BACKEND") or None, "the environment variable OTTT_BACKEND"
        if name is None:
            return _default(device_type)
        # The environment is read at every call, so a bad value is reported as
        # coming from there (the user never called set_backend).
        _check_name(name, f"OTTT_BACKEND={name!r} (environment variable)")
    if not runs_on(name, device_type):
        why = {
            "cpu": "the compiled extension is not loaded" if not _extension.loaded() else "it only runs CPU tensors",
            "cuda": "the extension was built without CUDA" if not _extension.cuda_compiled() else "it only runs CUDA tensors",
            "triton": "triton is not installed" if not triton_available()
            else "Triton runs CPU tensors only with TRITON_INTERPRET=1 set before importing triton",
            "cuda_emu": f"the emulated CUDA extension is not loaded ({_cuda_emu.LOAD_ERROR})" if not _cuda_emu.loaded()
            else "it runs CPU tensors only (the emulated device computes on the host)",
        }[name]
        raise RuntimeError(
            f"ottt_cuda backend {name!r} (forced by {source}) cannot run on device "
            f"'{device_type}': {why}. " + ("Use set_backend(None) for the automatic choice." if source == "set_backend"
                                          else "Unset OTTT_BACKEND for the automatic choice.")
        )
    return name


def build_info() -> dict:
    """How ottt_cuda was built and what can run here."""
    import torch

    from . import __version__

    info = _extension.info()
    return {
        "version": __version__,
        "torch_version": info.get("torch_version"),  # the torch it was compiled against
        "torch_runtime_version": torch.__version__,
        "extension_loaded": _extension.loaded(),
        "extension_error": _extension.LOAD_ERROR,
        "cpu_compiled": _extension.cpu_compiled(),
        "cuda_compiled": _extension.cuda_compiled(),
        "cuda_archs": info.get("cuda_archs", ""),
        "openmp": info.get("openmp", False),
        # the widest vector loop the compiled CPU kernels take here ("avx512", "avx2", "scalar"; None
        # without them); ATEN_CPU_CAPABILITY=avx2 turns the AVX-512 loops off (csrc/cpu/cpu_isa.h)
        "cpu_vector_isa": info.get("cpu_vector_isa"),
        "triton_available": triton_available(),
        "cuda_emu_loaded": _cuda_emu.loaded(),
        "cuda_device_available": torch.cuda.is_available(),
    }
