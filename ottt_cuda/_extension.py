"""Loads the compiled extension `ottt_cuda._C` if it can, and says why not otherwise.

Importing ottt_cuda never fails because of the extension: a missing or
mismatched build is reported once with a warning, and the ops fall back to the
Triton or pure-PyTorch backends.
"""
import warnings

import torch

_C = None
LOAD_ERROR = None

try:
    from . import _C  # noqa: F811  (registers torch.ops.ottt_cuda.* as a side effect)
except Exception as exc:  # ImportError, or OSError for undefined symbols of another torch
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "ottt_cuda: the compiled extension could not be loaded (" + LOAD_ERROR + "); "
        "falling back to the Triton/PyTorch backends. Rebuild with "
        "`pip install --no-build-isolation -e .` against the installed torch.",
        RuntimeWarning,
        stacklevel=2,
    )

_INFO = dict(_C.build_info()) if _C is not None else {}

if _C is not None and _INFO.get("torch_version") not in (None, "unknown", torch.__version__):
    warnings.warn(
        f"ottt_cuda: the extension was built with torch {_INFO['torch_version']} but torch "
        f"{torch.__version__} is running; rebuild it if ops misbehave.",
        RuntimeWarning,
        stacklevel=2,
    )


def loaded() -> bool:
    return _C is not None


def cpu_compiled() -> bool:
    return bool(_INFO.get("cpu_compiled", False))


def cuda_compiled() -> bool:
    return bool(_INFO.get("cuda_compiled", False))


def info() -> dict:
    return dict(_INFO)
