"""python -m ottt_cuda.bench: the memory-vs-BPTT benchmark (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
