"""The description saved beside every benchmark result: machine, threads, library
versions, the backend ottt_cuda picked, and the command that produced it."""
import os
import platform
import sys

import torch


def machine(device):
    """A dict describing where a result was measured. Never raises: a field that
    cannot be found says why instead of stopping the benchmark."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import spikingjelly

        info["spikingjelly"] = getattr(spikingjelly, "__version__", "installed")
    except ImportError:
        info["spikingjelly"] = None
    try:
        import ottt_cuda

        info["ottt_cuda_backend"] = ottt_cuda.get_backend(torch.device(device))
    except Exception as e:  # e.g. a bad OTTT_BACKEND: recorded, not fatal
        info["ottt_cuda_backend"] = f"unknown ({type(e).__name__}: {e})"
    return info


def command_line():
    """The command as typed (interpreter name + argv), for the record."""
    return " ".join([os.path.basename(sys.executable)] + sys.argv)
