"""One benchmark configuration, run in its own process so that its peaks are
its own: python -m ottt_cuda.bench.worker '<json config>' prints one JSON
record on its last stdout line.

Order: build the input and the model; for a method that must reproduce another
exactly (sj_bptt_memopt: plain sj_bptt), its gradients are checked against the
other's first, and a mismatch fails the configuration before anything is
timed; one warm-up step under the saved-bytes
counter (the deterministic figure; also checks the loss is finite and creates
the optimizer's state); then `iters` timed steps, each under PeakMemory
(no hooks there, so timing and peaks are those of a plain step; with
"malloc": "default" on the CPU, timed without it: see launch.py).
"""
import contextlib
import json
import math
import os
import statistics
import sys
import time

import torch

from . import memory, methods

# The bench's --malloc choices for CPU workers; the first is the default. "tracking": glibc's malloc
# set so that RSS follows tensor lifetimes (exact peaks; see launch.py); "default": the C library's
# malloc as a training process has it (step times without those page faults; no peaks).
MALLOC_CHOICES = ("tracking", "default")
TRACKING, DEFAULT_MALLOC = MALLOC_CHOICES


def malloc_of(config):
    """A configuration's malloc choice ("tracking" where it names none, as older configs do)."""
    return config.get("malloc", TRACKING)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(config):
    """One configuration's record (see the module doc). A "threads" entry sets
    torch's CPU threads for the run (restored after, for in-process use)."""
    threads = torch.get_num_threads()
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    try:
        return _run(config)
    finally:
        torch.set_num_threads(threads)


def _run(config):
    wall0, cpu0 = time.perf_counter(), time.process_time()
    device = torch.device(config["device"])
    method, model_name, T, batch = config["method"], config["model"], config["T"], config["batch"]
    iters = max(1, int(config.get("iters", 3)))
    seed = config.get("seed", 0)
    x, y = methods.make_input(model_name, batch, device, seed=seed)
    model, step = methods.build(method, model_name, device, seed=seed, example=(x, T))
    model.train()
    check = methods.check_gradients(method, model, step, model_name, device, x, y, T, seed=seed)
    opt = methods.make_optimizer(model)

    with memory.SavedBytes(model) as sb:
        loss = step(x, y, opt, T)
    loss = float(loss)
    if not math.isfinite(loss):
        raise FloatingPointError(f"{method} T={T}: loss is {loss}")

    # Under the C library's default malloc (config "malloc": "default") freed memory is reused, so the
    # RSS high-water mark is not the step's working set: peaks are not measured then (CUDA's are).
    measure_peaks = device.type == "cuda" or malloc_of(config) == TRACKING
    times, peaks, source = [], [], None
    for _ in range(iters):
        _sync(device)
        with memory.PeakMemory(device) if measure_peaks else contextlib.nullcontext() as pm:
            t0 = time.perf_counter()
            loss_i = step(x, y, opt, T)
            _sync(device)
            dt = time.perf_counter() - t0
        if not math.isfinite(float(loss_i)):
            raise FloatingPointError(f"{method} T={T}: loss is {float(loss_i)}")
        times.append(dt)
        if measure_peaks:
            peaks.append(pm.bytes)
            source = pm.source
    if not measure_peaks:
        peaks, source = [float("nan")], "not measured (the C library's default malloc reuses freed memory)"
    return {
        "method": method, "T": T, "batch": batch, "device": device.type, "model": model_name,
        "iter_s": statistics.median(times), "peak_mb": statistics.median(peaks) / memory.MB,
        "saved_mb": sb.peak / memory.MB,
        # breakdown and raw samples, for whoever wants to look closer
        "saved_tensors_mb": sb.peak_saved / memory.MB, "state_mb": sb.peak_state / memory.MB,
        "iter_s_all": times, "peak_mb_all": [p / memory.MB for p in peaks], "peak_source": source,
        "loss": loss, "iters": iters, "check": check, "threads": torch.get_num_threads(),
        # the whole configuration (build, warm-up, timed steps): wall and CPU seconds of this
        # process; on a shared machine CPU seconds say what an idle one would need
        "config_wall_s": time.perf_counter() - wall0, "config_cpu_s": time.process_time() - cpu0,
    }


def run_to_pipe(config, conn):
    """Child side of launch.run_forked: the record, or the error with the
    worker's own output, sent as ("ok" | "error", payload) through `conn`.
    The child's stdout/stderr (library warnings) go to a file, not over the
    parent's progress bar."""
    import tempfile
    import traceback

    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            conn.send(("ok", run(config)))
        except BaseException:  # everything goes back to the parent as text
            sys.stdout.flush()
            sys.stderr.flush()
            log.seek(0)
            conn.send(("error", log.read()[-1500:] + traceback.format_exc()))
        finally:
            conn.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    record = run(json.loads(argv[0]))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
