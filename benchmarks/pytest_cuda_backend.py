"""pytest plugin for the GPU suite: run CUDA tensors on the backend named by
OTTT_CUDA_BACKEND ('cuda' or 'triton') while CPU tensors keep their automatic
backend, so a test that compares a model on the GPU with the same model on the
CPU (tests/test_nn_cuda.py) checks one chosen GPU backend end to end.

    OTTT_CUDA_BACKEND=triton python -m pytest -p pytest_cuda_backend tests/test_nn_cuda.py

(benchmarks/ must be on PYTHONPATH.) OTTT_BACKEND cannot do this: it forces the
backend on every device, and the CPU side of such a test cannot run Triton.
"""
import os

import pytest


def pytest_configure(config):
    want = os.environ.get("OTTT_CUDA_BACKEND")
    if not want:
        raise pytest.UsageError("pytest_cuda_backend: set OTTT_CUDA_BACKEND to 'cuda' or 'triton'")
    from ottt_cuda import _backend

    if want not in ("cuda", "triton"):
        raise pytest.UsageError(f"OTTT_CUDA_BACKEND must be 'cuda' or 'triton', got {want!r}")
    automatic = _backend._default
    config._ottt_cuda_calls = 0

    def chosen(device_type):
        if device_type != "cuda":
            return automatic(device_type)
        if not _backend.runs_on(want, "cuda"):
            raise RuntimeError(f"OTTT_CUDA_BACKEND={want}: that backend cannot run CUDA tensors here")
        config._ottt_cuda_calls += 1
        return want

    _backend._default = chosen
    config._ottt_cuda_backend = want


def pytest_report_header(config):
    return f"ottt_cuda: CUDA tensors run on the {config._ottt_cuda_backend!r} backend (OTTT_CUDA_BACKEND)"


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        _passed.append(report.nodeid)


_passed = []


def pytest_sessionfinish(session, exitstatus):
    # Tests that passed without one op on the chosen backend proved nothing about it.
    if exitstatus == 0 and _passed and session.config._ottt_cuda_calls == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, config):
    terminalreporter.write_line(f"KEY: {config._ottt_cuda_backend} backend, "
                                f"{config._ottt_cuda_calls} CUDA op dispatches")
