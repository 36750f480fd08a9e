"""benchmarks/gpu_suite.sh is run only on a lent GPU; its dry run keeps it from rotting:
every step is listed in priority order, every Python script it calls parses its
--help, the CUDA tests collect, the backend plugin loads, the wheels logic runs
and the results archive packs."""
import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("versions", "wheels", "build", "build_info", "smoke", "op_tests", "nn_cuda", "nn_triton",
         "kernels_fp32", "memory", "sanitizer", "kernels_bf16", "imagenet_step", "quick_bench")


def test_gpu_suite_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "GPU_SUITE_WORK": str(tmp_path / "work")}
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_suite.sh"), "--dry-run"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    positions = [out.find(f"== {s} (timeout ") for s in STEPS]
    assert -1 not in positions, out
    assert positions == sorted(positions), "steps out of priority order"
    for script in ("benchmarks/gpu_ops_check.py", "benchmarks/kernels.py", "benchmarks/imagenet_step.py",
                   "-m ottt_cuda.bench"):
        assert f"dry run: {script} --help parses" in out
    assert "CUDA tests collected" in out and " 0 CUDA tests" not in out
    assert "dry run: pytest_cuda_backend plugin loads" in out
    # The memory step asks for the paper's setting, explicitly (the CLI's defaults are a quick run).
    assert "--device cuda --model vgg11_ws --batch 128 --T 1 6 16 32" in out
    wheels_line = next(line for line in out.splitlines() if line.startswith("dry run: wheels:"))
    if os.path.isdir(os.path.join(ROOT, ".whl")):
        # (not just "importable": the failure line says "NOT importable")
        assert "spikingjelly importable from" in wheels_line, wheels_line
    else:
        assert "no .whl folder" in wheels_line
    # Exactly the two result files come back, and the archive holds the logs.
    assert sorted(os.listdir(tmp_path / "out")) == ["gpu_results.tgz", "summary.txt"]
    with tarfile.open(tmp_path / "out" / "gpu_results.tgz") as t:
        names = t.getnames()
    assert "summary.txt" in names and any(n.startswith("logs/") for n in names)
