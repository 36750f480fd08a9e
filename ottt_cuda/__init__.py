"""ottt_cuda: fused kernels for Online Training Through Time of spiking neural networks."""
__version__ = "0.1.0"

from . import ops, reference  # noqa: E402
from ._backend import BACKENDS, build_info, get_backend, set_backend  # noqa: E402

__all__ = ["ops", "reference", "BACKENDS", "build_info", "get_backend", "set_backend", "__version__"]

# --- OTTT layers, training and models (issue 3) ---------------------------------
from . import nn  # noqa: E402
from .nn import reset, set_mode  # noqa: E402
from .training import evaluate, train_step  # noqa: E402

__all__ += ["nn", "reset", "set_mode", "train_step", "evaluate"]
from . import models  # noqa: E402
from .convert import convert  # noqa: E402

__all__ += ["models", "convert"]
