"""benchmarks/gpu_suite.sh is run only on a lent GPU; its dry run keeps it from rotting."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_suite_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_suite.sh"), "--dry-run"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for step in ("build", "build_info", "cuda_tests", "kernels_fp32"):
        assert f"== {step}:" in r.stdout
    assert "CUDA tests collected" in r.stdout and " 0 CUDA tests" not in r.stdout
    assert "torch" in (tmp_path / "machine.txt").read_text()
