"""The memory-vs-BPTT benchmark: `python -m ottt_cuda.bench` (or
benchmarks/memory_vs_bptt.py, the same code).

- cli: options, one subprocess per configuration, outputs;
- worker: one configuration (warm-up with the saved-bytes counter, timed steps);
- memory: what is measured (saved-for-backward bytes, layer state, peaks);
- methods: ours (ottt_a, ottt_o, ottt_a_chunk, sltt, bptt) and SpikingJelly's;
- report: Markdown table, JSON records, two-panel PNG;
- progress: the progress bar.
"""
from .memory import PeakMemory, SavedBytes, state_storages

__all__ = ["PeakMemory", "SavedBytes", "state_storages"]
