"""How benchmarks time things: median of CUDA-synchronized calls, and a CPU heap
that reuses freed buffers the way a training loop in steady state does."""
import statistics
import time

import torch


def sync(device):
    """Wait for the device's queued work (a no-op on the CPU)."""
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


def reuse_freed_memory():
    """Keep freed CPU buffers in glibc's heap instead of returning them to the OS.

    By default a multi-MB tensor is mmapped and unmapped on every allocation, so
    each op pays page faults for its fresh outputs (on a loaded machine that costs
    more than the op itself). Training reaches a steady state where buffers are
    reused; this makes a benchmark measure that state, for every backend alike.
    Returns False where glibc is not there to ask.
    """
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    big = 1 << 30
    return bool(libc.mallopt(M_MMAP_THRESHOLD, big)) and bool(libc.mallopt(M_TRIM_THRESHOLD, big))
