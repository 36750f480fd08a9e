"""The memory-vs-BPTT benchmark: `python -m ottt_cuda.bench` (or
benchmarks/memory_vs_bptt.py, the same code).

- cli: options, one subprocess per configuration, outputs;
- presets: the quick default workload and --full (the paper's sweep);
- worker: one configuration (warm-up with the saved-bytes counter, timed steps);
- memory: what is measured (saved-for-backward bytes, layer state, peaks);
- methods: ours (ottt_a, ottt_o, ottt_a_chunk, sltt, bptt) and SpikingJelly's;
- report: Markdown table, the headline in words, JSON records, two-panel PNG;
- timing, machine: timing helpers and the machine description (also used by
  benchmarks/kernels.py).
"""
from .memory import PeakMemory, SavedBytes, state_storages

__all__ = ["PeakMemory", "SavedBytes", "state_storages"]
