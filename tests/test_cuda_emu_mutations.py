"""scripts/cuda_emu_mutations.py, the planted-bug check of the emulated CUDA
tests, stays runnable: every line it mutates is still in the kernels exactly
once (an edit of a kernel that moves one fails here, not silently in the
script), and it reads a failed run's output as the failure it was."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import cuda_emu_mutations as mutations  # noqa: E402


@pytest.mark.parametrize("m", mutations.MUTATIONS, ids=lambda m: m.name)
def test_each_mutated_line_is_in_the_kernels_exactly_once(m):
    with open(os.path.join(ROOT, m.path)) as f:
        source = f.read()
    assert source.count(m.old) == 1, f"{m.name}: {m.old!r} in {m.path}"
    assert m.new != m.old and m.new not in source


def test_names_are_unique_and_every_sanitizer_is_used():
    names = [m.name for m in mutations.MUTATIONS]
    assert len(names) == len(set(names)) and len(names) >= 6
    assert {m.sanitize for m in mutations.MUTATIONS} == {mutations.ASAN, mutations.TSAN}


def test_a_passing_run_is_not_a_catch():
    assert mutations._verdict(0, "tests/test_a.py::test_x PASSED\n1 passed") is None


@pytest.mark.parametrize("out, test, how", [
    ("tests/test_a.py::test_x[cpu-cuda_emu] FAILED\nE   AssertionError: Tensor-likes are not equal!\n"
     "FAILED tests/test_a.py::test_x[cpu-cuda_emu] - AssertionError\n",
     "tests/test_a.py::test_x[cpu-cuda_emu]", "assertion: AssertionError: Tensor-likes are not equal!"),
    ("tests/test_a.py::test_y PASSED\ntests/test_b.py::test_z[float32] \n=================\n"
     "==123==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x6020\n",
     "tests/test_b.py::test_z[float32]", "AddressSanitizer: heap-buffer-overflow"),
    ("tests/test_b.py::test_w \ncsrc/cuda/lif_step_kernels.cu:16:5: runtime error: load of misaligned address\n",
     "tests/test_b.py::test_w", "UndefinedBehaviorSanitizer: load of misaligned address"),
    ("tests/test_c.py::test_v \nWARNING: ThreadSanitizer: data race (pid=77)\n",
     "tests/test_c.py::test_v", "ThreadSanitizer: data race"),
    ("tests/test_d.py::test_u FAILED\nE   RuntimeError: launch of lif_multistep_fwd_kernel<T>: block (2048, 1, 1) has 2048 "
     "threads, more than 1024\nFAILED tests/test_d.py::test_u - RuntimeError\n",
     "tests/test_d.py::test_u", "launch error: launch of lif_multistep_fwd_kernel<T>: block (2048, 1, 1) has 2048"),
])
def test_a_failed_run_names_its_test_and_how_it_failed(out, test, how):
    found_test, found_how = mutations._verdict(1, out)
    assert found_test == test and found_how.startswith(how), (found_test, found_how)
