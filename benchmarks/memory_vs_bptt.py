"""Memory and time per training step of OTTT vs BPTT (and SpikingJelly) over T.
A thin wrapper: the code is ottt_cuda.bench, the same as `python -m ottt_cuda.bench`.

    python benchmarks/memory_vs_bptt.py --json benchmarks/results/memory_vs_bptt_cpu.json \
        --plot benchmarks/results/memory_vs_bptt_cpu.png
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ottt_cuda.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
