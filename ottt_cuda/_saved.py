"""Counting what a training step keeps in memory, by storage: shared by the memory
benchmark (bench/memory.py: SavedBytes) and chunk="auto" (memory_budget.py:
StepMemoryCounter), so that both count the same bytes the same way.

- A tensor is counted by the storage it lives in, once: a view keeps its whole
  storage alive, and the same storage saved twice is held once.
- A saved tensor is replaced, while a counter's saved_tensors_hooks are on, by a
  Packed stand-in; when autograd frees it, the counter is told (release).
- The layers' state is every tensor a module keeps as a plain attribute (membranes,
  traces, masks, previous spikes, hoisted weights, SpikingJelly's memories):
  parameters, buffers, submodules and hooks are not state.
"""
import torch


def storage_key(t):
    """((device, storage address), storage bytes) of tensor t."""
    try:
        st = t.untyped_storage()
        return (str(t.device), st.data_ptr()), st.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse / nested: no single storage
        return (str(t.device), id(t)), t.numel() * t.element_size()


class Packed:
    """What autograd holds instead of a saved tensor while a counter's hooks are on; when
    autograd frees it, counter.release(key) uncounts the storage."""
    __slots__ = ("tensor", "key", "counter", "__weakref__")

    def __init__(self, tensor, key, counter):
        self.tensor, self.key, self.counter = tensor, key, counter

    def __del__(self):
        self.counter.release(self.key)


def unpack(p):
    """saved_tensors_hooks' unpack: the tensor a Packed stands for (other values as they are)."""
    return p.tensor if isinstance(p, Packed) else p


def tensors_in(value, depth=0):
    """The tensors in an attribute value: a tensor, or lists / tuples / dicts of them (2 levels)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 2 and isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors_in(v, depth + 1)
    elif depth < 2 and isinstance(value, dict):
        for v in value.values():
            yield from tensors_in(v, depth + 1)


def state_storages(model, skip=()):
    """{storage key: bytes} of the tensors the modules of `model` keep between calls as plain
    attributes (not parameters, buffers, submodules or hooks), each storage once; keys in `skip`
    left out."""
    out = {}
    for m in model.modules():
        for name, value in vars(m).items():
            if name in ("_parameters", "_buffers", "_modules") or name.startswith(("_forward", "_backward")) \
                    or name.endswith("hooks"):
                continue
            for t in tensors_in(value):
                if isinstance(t, torch.nn.Parameter):
                    continue
                key, nbytes = storage_key(t)
                if key not in skip:
                    out[key] = nbytes
    return out
