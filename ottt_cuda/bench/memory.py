"""What the memory-vs-BPTT benchmark measures, and how.

Three figures per configuration (method, T, batch, device, model):

``saved_mb`` (deterministic): the peak, over one training step, of the bytes
that backward needs: every tensor packed for backward (seen through
torch.autograd.graph.saved_tensors_hooks) counted ONCE PER STORAGE (so a
view, or the same trace saved by two nodes, counts once, and a view keeps its
whole storage alive so the whole storage counts), while it is alive, plus the
layers' state (membranes, traces, dropout masks, recurrent spikes,
SpikingJelly's neuron memories) not already counted. Model parameters are not
counted (every method holds them anyway); tensors derived from them (e.g. the
standardized sWS weights) are. A packed tensor stops counting when autograd
frees it, i.e. when its graph node has run backward (retain_graph=False) or the
graph is dropped: under OTTT a time step's graph is freed by that step's
backward, so the figure is the largest single step (flat in T); under BPTT
the whole T-step graph is alive at once.

``peak_mb`` (allocator/OS view, includes workspaces and temporaries):
- CUDA: torch.cuda.max_memory_allocated() during the step minus
  torch.cuda.memory_allocated() just before it.
- CPU: the growth of the process's peak resident set during the step: the
  kernel's high-water mark VmHWM is reset with ``echo 5 > /proc/self/clear_refs``
  right before the step and read from /proc/self/status after it; minus
  VmRSS before. This is exact (no sampling thread can miss a short peak), where
  getrusage's ru_maxrss cannot be reset and so says nothing after the warm-up.
  For RSS to follow tensor lifetimes the worker process runs with glibc's
  MALLOC_MMAP_THRESHOLD_ fixed at 64 KiB (large tensors are mmapped and
  returned to the OS when freed; a fixed threshold also stops glibc from
  raising it after the first free). Without /proc/self/clear_refs a sampling
  thread reading /proc/self/statm every 0.5 ms is the fallback (it can miss
  peaks shorter than that).

``iter_s``: median wall time of one training step (CUDA synchronized).
"""
import os
import threading
import time

import torch

from .. import _saved
from .._saved import Packed, storage_key, unpack

MB = 1 << 20


class SavedBytes:
    """Context manager counting the live bytes of tensors saved for backward,
    once per storage, and their peak (optionally plus layer state, see
    `state_of`). Use one per measured step:

        with SavedBytes(model) as sb:
            train_step(...)
        sb.peak          # bytes
    """

    def __init__(self, model=None, exclude=None):
        self.model = model
        self._exclude = set()
        for t in (exclude if exclude is not None else (model.parameters() if model is not None else ())):
            self._exclude.add(storage_key(t)[0])
        self._refs = {}  # key -> [count, nbytes]
        self._lock = threading.Lock()
        self.live = 0  # bytes of saved storages alive now
        self.peak_saved = 0  # peak of `live` alone
        self.peak = 0  # peak of saved + state not already saved
        self.peak_state = 0
        self.packed = 0  # number of pack events (for tests / sanity)
        self._hooks = None
        self._fwd_hook = None

    # --- autograd hooks -----------------------------------------------------
    def _pack(self, t):
        key, nbytes = storage_key(t)
        self.packed += 1
        if key in self._exclude:
            return t  # a parameter: held anyway, not counted, stored as is
        with self._lock:
            ref = self._refs.get(key)
            if ref is None:
                self._refs[key] = [1, nbytes]
                self.live += nbytes
                self.peak_saved = max(self.peak_saved, self.live)
            else:
                ref[0] += 1
        self.sample()
        return Packed(t, key, self)

    def release(self, key):  # (Packed.__del__)
        with self._lock:
            ref = self._refs.get(key)
            if ref is None:
                return
            ref[0] -= 1
            if ref[0] == 0:
                self.live -= ref[1]
                del self._refs[key]

    # --- layer state ----------------------------------------------------------
    def sample(self):
        """Record saved + state bytes now (called at every pack and after every
        module's forward: the state only changes inside forwards)."""
        if self.model is None:
            self.peak = max(self.peak, self.live)
            return
        with self._lock:
            live, keys = self.live, set(self._refs)
        state = 0
        for key, nbytes in state_storages(self.model).items():
            if key not in keys and key not in self._exclude:
                state += nbytes
        self.peak_state = max(self.peak_state, state)
        self.peak = max(self.peak, live + state)

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, unpack)
        self._hooks.__enter__()
        if self.model is not None:
            mods = set(map(id, self.model.modules()))

            def after_forward(module, _args, _out):
                if id(module) in mods:
                    self.sample()

            self._fwd_hook = torch.nn.modules.module.register_module_forward_hook(after_forward)
        return self

    def __exit__(self, *exc):
        if self._fwd_hook is not None:
            self._fwd_hook.remove()
            self._fwd_hook = None
        self._hooks.__exit__(*exc)
        self.sample()
        return False


def state_storages(model):
    """{storage key: bytes} of the tensors a model keeps between calls outside
    its parameters and buffers: ottt_cuda's v / a_hat / mask / s_prev / f_prev /
    hoisted weights, SpikingJelly's `_memories` (v, trace). Each storage once."""
    return _saved.state_storages(model)


# --- process / device peaks ----------------------------------------------------------------

def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _can_reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kb("VmHWM")
        return True
    except OSError:
        return False


class _StatmSampler(threading.Thread):
    def __init__(self, period=5e-4):
        super().__init__(daemon=True)
        self.period, self.peak, self._stop = period, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.period)

    def stop(self):
        self._stop.set()
        self.join()
        self.peak = max(self.peak, self.rss())


class PeakMemory:
    """Peak memory growth of one step: `with PeakMemory(device) as pm: step()`,
    then pm.bytes and pm.source (what was measured)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.bytes = None
        self.source = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            self.source = "cuda max_memory_allocated - memory_allocated before"
        elif _can_reset_hwm():
            self._before = _status_kb("VmRSS") * 1024
            self._sampler = None
            self.source = "VmHWM (reset via /proc/self/clear_refs) - VmRSS before"
        else:
            self._sampler = _StatmSampler()
            self._before = self._sampler.rss()
            self._sampler.start()
            self.source = "sampled /proc/self/statm RSS peak - RSS before"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._sampler is None:
            peak = _status_kb("VmHWM") * 1024
        else:
            self._sampler.stop()
            peak = self._sampler.peak
        self.bytes = max(0, peak - self._before)
        return False
