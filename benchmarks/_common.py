"""Shared benchmark plumbing: timing (median, CUDA-synchronized), the machine
description saved beside every result, and result files."""
import json
import os
import platform
import statistics
import sys
import time

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, device, *, warmup=3, reps=20, min_time=0.05):
    """Median seconds per call of fn() over `reps` timed calls (at least `min_time` in all)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    total = 0.0
    while len(samples) < reps or total < min_time:
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
        samples.append(dt)
        total += dt
        if len(samples) >= 10 * reps:
            break
    return statistics.median(samples)


def machine(device):
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
    return info


def save_json(path, payload):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def command_line():
    return " ".join([os.path.basename(sys.executable)] + sys.argv)


def reuse_freed_memory():
    """Keep freed CPU buffers in glibc's heap instead of returning them to the OS.

    By default a multi-MB tensor is mmapped and unmapped on every allocation, so
    each op pays page faults for its fresh outputs (on a loaded machine that costs
    more than the op itself). Training reaches a steady state where buffers are
    reused; this makes a benchmark measure that state, for every backend alike.
    """
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    big = 1 << 30
    return bool(libc.mallopt(M_MMAP_THRESHOLD, big)) and bool(libc.mallopt(M_TRIM_THRESHOLD, big))
