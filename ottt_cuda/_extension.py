"""Loads the compiled extension `ottt_cuda._C` if it can, and says plainly why not otherwise.

Importing ottt_cuda never fails because of the extension: a missing, disabled or
mismatched build is reported once with a warning, and the ops fall back to the
Triton or pure-PyTorch backends.

OTTT_DISABLE_EXTENSION=1 skips loading it on purpose (CI runs the tests that way
to prove the package works without a compiler).
"""
import importlib.util
import os
import warnings

import torch

DISABLE_ENV = "OTTT_DISABLE_EXTENSION"
REBUILD_HINT = ("rebuild it with `pip install --no-build-isolation -e .` in a checkout "
                "(or reinstall the package) against the installed torch")

_C = None
LOAD_ERROR = None  # why _C is not loaded (None when it is)


def disabled() -> bool:
    """Whether OTTT_DISABLE_EXTENSION asks for no compiled extension (this one or the emulated-CUDA one)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _warn(message):
    # stacklevel 3: point at the `import ottt_cuda` line of the user, not at this module
    warnings.warn("ottt_cuda: " + message, RuntimeWarning, stacklevel=3)


def _load():
    global _C, LOAD_ERROR
    if disabled():
        LOAD_ERROR = f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
        _warn(f"the compiled extension is disabled ({DISABLE_ENV}={os.environ[DISABLE_ENV]}); "
              "using the Triton/PyTorch backends.")
        return
    # Look the file up first: `from . import _C` on a missing file, during the
    # package's own import, reports a misleading "circular import".
    if importlib.util.find_spec(__package__ + "._C") is None:
        LOAD_ERROR = "not built (no ottt_cuda/_C*.so)"
        _warn(f"the compiled extension is not built; using the Triton/PyTorch backends: {REBUILD_HINT}.")
        return
    try:
        from . import _C as module  # registers torch.ops.ottt_cuda.* as a side effect
    except Exception as exc:  # ImportError, or OSError for undefined symbols of another torch
        LOAD_ERROR = f"{type(exc).__name__}: {exc}"
        _warn(f"the compiled extension is built but could not be loaded ({LOAD_ERROR}); "
              f"using the Triton/PyTorch backends: {REBUILD_HINT}.")
        return
    _C = module


_load()

_INFO = dict(_C.build_info()) if _C is not None else {}

if _C is not None and _INFO.get("torch_version") not in (None, "unknown", torch.__version__):
    _warn(f"the extension was built with torch {_INFO['torch_version']} but torch "
          f"{torch.__version__} is running; {REBUILD_HINT} if ops misbehave.")


def loaded() -> bool:
    return _C is not None


def cpu_compiled() -> bool:
    return bool(_INFO.get("cpu_compiled", False))


def cuda_compiled() -> bool:
    return bool(_INFO.get("cuda_compiled", False))


def info() -> dict:
    return dict(_INFO)
