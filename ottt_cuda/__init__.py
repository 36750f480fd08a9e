"""ottt_cuda: fused kernels for Online Training Through Time of spiking neural networks."""
__version__ = "0.1.0"

from . import ops, reference  # noqa: E402
from ._backend import BACKENDS, build_info, get_backend, set_backend  # noqa: E402

__all__ = ["ops", "reference", "BACKENDS", "build_info", "get_backend", "set_backend", "__version__"]
