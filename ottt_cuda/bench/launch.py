"""Runs each benchmark configuration in a process of its own, so that its memory
peaks are its own.

CPU: each configuration is forked from a multiprocessing forkserver that has
already imported torch, ottt_cuda and SpikingJelly. On a slow 2-core CPU those
imports take several seconds per process, a large part of the quick benchmark;
a forked child starts in milliseconds with a fresh heap of its own (the peak it
reports is the growth of its own resident set). The server is started with
glibc's malloc set so that RSS follows tensor lifetimes (see memory.py).

With --malloc default (the C library's malloc, for step times without the page faults these settings
cost) and on CUDA (and platforms without a forkserver): a fresh interpreter per configuration
(python -m ottt_cuda.bench.worker):
CUDA must not be initialized in a process that is then forked, and a GPU
machine imports quickly anyway.
"""
import json
import multiprocessing
import os
import subprocess
import sys

from . import worker

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Large blocks mmapped with a fixed threshold and returned to the OS on free.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
_PRELOAD = ["ottt_cuda.bench.worker", "spikingjelly.activation_based.model.spiking_vggws_ottt"]


def _failed(config, error):
    return dict(config, iter_s=None, peak_mb=None, saved_mb=None, error=error[-2000:])


def worker_env(malloc=worker.TRACKING):
    """The environment of a worker interpreter: this very package importable
    (a checkout or an install), and the malloc settings above ("tracking"), or
    none of them, even where this process's environment has them ("default":
    the C library's own malloc, as a training process has it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k, v in _MALLOC_ENV.items():
        if malloc == worker.DEFAULT_MALLOC:
            env.pop(k, None)
        else:
            env.setdefault(k, v)
    return env


def run_subprocess(config, timeout):
    """One configuration in a new interpreter; a record, or one with "error"."""
    cmd = [sys.executable, "-m", "ottt_cuda.bench.worker", json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=worker_env(worker.malloc_of(config)))
    except subprocess.TimeoutExpired:
        return _failed(config, f"timed out after {timeout:.0f} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    return _failed(config, proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}")


_context = None


def _forkserver():
    global _context
    if _context is None:
        # The server process inherits os.environ when it starts (on the first
        # Process.start); this process's own heap is unaffected.
        for k, v in _MALLOC_ENV.items():
            os.environ.setdefault(k, v)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)  # a module that is not installed is skipped
        _context = ctx
    return _context


def run_forked(config, timeout):
    """One configuration in a child of the preloaded forkserver (CPU only)."""
    ctx = _forkserver()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=worker.run_to_pipe, args=(config, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            return _failed(config, f"timed out after {timeout:.0f} s")
        try:
            status, payload = recv.recv()
        except EOFError:  # the child died without a word (a crash, the OOM killer)
            proc.join()
            return _failed(config, f"the worker process died (exit code {proc.exitcode})")
    finally:
        proc.join(5)
        recv.close()
    return payload if status == "ok" else _failed(config, payload)


def run_config(config, timeout):
    """A record for one configuration, measured in a process of its own (a fresh interpreter for
    malloc "default": the forkserver's children inherit its tracking settings)."""
    if (config["device"] == "cpu" and worker.malloc_of(config) == worker.TRACKING
            and "forkserver" in multiprocessing.get_all_start_methods()):
        return run_forked(config, timeout)
    return run_subprocess(config, timeout)
