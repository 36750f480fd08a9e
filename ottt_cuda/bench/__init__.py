"""The main job, `python -m ottt_cuda.bench`: memory and time of OTTT against BPTT
and SpikingJelly per training step, over T; and the pieces the scripts in
benchmarks/ share with it.

- cli: options, the loop over T, outputs;
- presets: the quick default workload and --full (the paper's sweep);
- sweep: one T: every method's memory in untimed steps, then timed rounds side by side;
- memory: what is measured (peak of live tensor bytes from allocator events,
  bytes saved for backward, layer state);
- methods: the models (mlp784 included) and the methods: ours (ottt_a, ottt_o,
  ottt_a_chunk, sltt, bptt) and SpikingJelly's;
- report: Markdown table, the headline in words, JSON records, two-panel PNG;
- timing: interleaved rounds and the median of synchronized calls; machine: the
  machine description saved with every result.
"""
from .memory import LiveBytes, SavedBytes, state_storages

__all__ = ["LiveBytes", "SavedBytes", "state_storages"]
