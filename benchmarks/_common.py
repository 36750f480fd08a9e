"""Shared benchmark plumbing for the scripts in benchmarks/: the code lives in the
package (ottt_cuda.bench), so an installed ottt_cuda has it too; this file only
adds where a checkout keeps its results."""
import os

from ottt_cuda.bench.machine import command_line, machine  # noqa: F401
from ottt_cuda.bench.report import save_json  # noqa: F401
from ottt_cuda.bench.timing import sync, time_call  # noqa: F401

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
