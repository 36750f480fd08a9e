"""ottt_cuda: fused kernels for Online Training Through Time of spiking neural networks.

The public API, in one list:

    ops                 the kernels: lif_step, lif_multistep, trace_update(_), outer_accumulate_
    reference           the same ops in plain PyTorch (what the tests check the kernels against)
    nn                  layers: Linear, Conv2d, WSLinear, WSConv2d, LIF, RecurrentLIF, Scale, Dropout
    models              the paper's models: vgg11_ws, vgg11f_ws, nf_resnet34, r400
    convert             a SpikingJelly / snnTorch model -> ottt_cuda layers, same weights
    train_step          one training step (T time steps) in a mode: ottt_a, ottt_o, sltt, sltt_k, bptt
    evaluate            the summed output over T time steps, no gradients
    reset, set_mode     clear a model's state; switch its layers between ottt / sltt / bptt
    BACKENDS            the kernel backends: cuda, triton, cpu, torch
    get_backend         the backend used for tensors on a device
    set_backend         force a backend (None: automatic; the OTTT_BACKEND variable does the same)
    build_info          how the package was built and what can run here
    __version__

Command lines (not imported here): `python -m ottt_cuda` (build and backends, for
a bug report), `python -m ottt_cuda.bench` (memory and time against BPTT),
`python -m ottt_cuda.train` / `ottt-train` (the paper's training recipes).
"""
__version__ = "0.1.0"

from . import models, nn, ops, reference  # noqa: E402
from ._backend import BACKENDS, build_info, get_backend, set_backend  # noqa: E402
from .convert import convert  # noqa: E402
from .nir_exchange import from_nir, to_nir  # noqa: E402 (imports nir only when called)
from .nn import reset, set_mode  # noqa: E402
from .training import evaluate, train_step  # noqa: E402

__all__ = [
    "ops", "reference", "nn", "models", "convert", "from_nir", "to_nir",
    "train_step", "evaluate", "reset", "set_mode",
    "BACKENDS", "get_backend", "set_backend", "build_info",
    "__version__",
]
