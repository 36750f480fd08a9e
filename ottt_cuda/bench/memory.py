"""What the main job (`python -m ottt_cuda.bench`) measures about memory.

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

``peak_mb`` (allocator events): the most tensor bytes alive at once during one
training step, less the bytes of the model's parameters and of the optimizer's
state (momentum buffers), which are the same for every method on one architecture.
What it counts: activations, saved tensors, gradients, layer state, workspaces,
temporaries, and whatever an earlier step left alive, as far as they are alive at
the same moment. It is read from the allocator's own event stream: torch.profiler
with profile_memory=True reports every allocation and every free of the device's
allocator with its address and size, in order (LiveBytes). The session starts
before the model is built, so every tensor of the method is in it. Memory that
does not come from PyTorch's allocator (a library's private scratch space) is not
seen. The same definition on the CPU and on CUDA (there the growth in the step is
also recorded as max_memory_allocated minus memory_allocated before it, a
cross-check of the event count).

The profiler costs time, so the step it watches is never a timed one: timing
(ottt_cuda.bench.sweep) runs in separate steps without it, with the allocator as
PyTorch and the C library leave it.
"""
import contextlib
import os
import tempfile
import threading

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


def tensor_bytes(tensors):
    """Bytes of the storages of `tensors`, each storage once."""
    seen = {}
    for t in tensors:
        key, nbytes = storage_key(t)
        seen[key] = nbytes
    return sum(seen.values())


def optimizer_tensors(optimizer):
    """The tensors of an optimizer's state (e.g. SGD's momentum buffers)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def state_storages(model):
    """{storage key: bytes} of the tensors a model keeps between calls outside
    its parameters and buffers: ottt_cuda's v / a_hat / mask / s_prev / f_prev /
    hoisted weights, SpikingJelly's `_memories` (v, trace). Each storage once."""
    return _saved.state_storages(model)


# --- peak of live tensor bytes, from allocator events ------------------------------------

_MARK = "ottt_cuda.bench::measured"
# What the profiler's C++ side writes to stderr on every session (and a one-time warning for a
# free it cannot size, i.e. a tensor from before the session, which LiveBytes ignores by design).
_PROFILER_NOISE = ("USDT:", "profiler_start", "profiler_stop", "gpuGetDeviceCount",
                   "Memory block of unknown size")


@contextlib.contextmanager
def _quiet_profiler_logs():
    """Drop the profiler's own log lines from file descriptor 2; anything else written there
    while it runs is passed on."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            kept = [ln for ln in log.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(n in ln for n in _PROFILER_NOISE)]
            if kept:
                sys.stderr.write("".join(kept))


def _walk(events):
    for e in events:
        yield e
        yield from _walk(e.children)


def peak_over_window(allocations, start_ns, end_ns):
    """From allocator events [(time_ns, address, signed size)] in the order they happened: the
    bytes alive when the window [start_ns, end_ns] opens and the most alive inside it, counting
    only blocks whose allocation is among the events (a free of an older block is ignored)."""
    live, sizes, before, peak, opened = 0, {}, None, None, False
    for t, ptr, size in allocations:
        if not opened and t >= start_ns:
            before = peak = live
            opened = True
        if opened and t > end_ns:
            break
        if size > 0:
            sizes[ptr] = size
            live += size
        elif ptr in sizes:
            live -= sizes.pop(ptr)
        if opened:
            peak = max(peak, live)
    if not opened:
        before = peak = live
    return before, peak


class LiveBytes:
    """Live tensor bytes on `device`, from the allocator's events (see the module doc):

        with LiveBytes("cpu") as lb:
            model = build()              # inside the session: every later free has a known size
            warm_up(model)
            with lb.measure():
                step(model)
        lb.peak_total  # most bytes (allocated in the session) alive at once inside measure()
        lb.before      # bytes alive (allocated in the session) when measure() began
        lb.peak        # peak_total - before: the growth inside measure()

    One measure() block per session."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.before = self.peak = self.peak_total = None
        self.cuda_check = None  # CUDA: max_memory_allocated - memory_allocated over measure()
        self._prof = None
        self._quiet = None

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile

        self._quiet = _quiet_profiler_logs()
        self._quiet.__enter__()
        try:
            self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False)
            self._prof.__enter__()
        except BaseException:
            self._quiet.__exit__(None, None, None)
            raise
        return self

    @contextlib.contextmanager
    def measure(self):
        from torch.profiler import record_function

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        with record_function(_MARK):
            yield self
            if cuda:
                torch.cuda.synchronize(self.device)
        if cuda:
            self.cuda_check = torch.cuda.max_memory_allocated(self.device) - before

    def __exit__(self, *exc):
        try:
            self._prof.__exit__(*exc)
        finally:
            self._quiet.__exit__(None, None, None)
        if exc[0] is not None:
            return False
        events = list(_walk(self._prof.profiler.kineto_results.experimental_event_tree()))
        marks = [e for e in events if e.name == _MARK]
        if len(marks) != 1:
            raise RuntimeError(f"LiveBytes: expected one measure() block in the session, found {len(marks)}")
        allocs = []
        for e in events:
            if str(e.tag).endswith("Allocation"):
                f = e.extra_fields
                if f.device.type == self.device.type:
                    allocs.append((e.start_time_ns, f.ptr, f.alloc_size))
        allocs.sort(key=lambda a: a[0])  # stable: same-time events keep the order they were recorded in
        self.before, self.peak_total = peak_over_window(allocs, marks[0].start_time_ns, marks[0].end_time_ns)
        self.peak = self.peak_total - self.before
        return False
