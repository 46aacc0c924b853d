"""The benchmarks run (the only thing the tests assert about them: never their speed)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs a benchmark script in a subprocess

ROOT = Path(__file__).resolve().parents[1]


def test_bench_kernels_quick_runs():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "kernels.py"), "--quick",
                          "--gemm-crossover", "--parallel-crossover"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "## Passes" in out.stdout and "error signal" in out.stdout


def test_bench_streaming_small_runs():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "streaming.py"), "--rows", "2000",
                          "--threads", "1", "--repeat", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "memmap / in memory" in out.stdout and "BLAS:" in out.stdout


def test_bench_distributed_quick_runs(tmp_path):
    # the measured part launches mpiexec; without mpi4py (outside CI) only the cost model runs
    import importlib.util

    part = "both" if importlib.util.find_spec("mpi4py") else "model"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "distributed.py"), "--quick",
                          "--part", part, "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "speed-up p=2/8/64" in out.stdout
    if part == "both":
        assert "allreduce us/step" in out.stdout


def test_bench_sklearn_quick_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "sklearn_mlp.py"), "--quick",
                          "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| digits | lbfgs |" in out.stdout and (tmp_path / "sklearn.json").exists()


def test_bench_bf16_gemm_quick_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bf16_gemm.py"), "--quick",
                          "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "bf16 path:" in out.stdout and "sgemm GFLOP/s" in out.stdout
    assert (tmp_path / "bf16_gemm.md").exists() and (tmp_path / "bf16_gemm.json").exists()


def test_bench_vocab_quick_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "vocab.py"), "--quick",
                          "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "nadam / relu" in out.stdout and "adam / mish" in out.stdout
    assert (tmp_path / "vocab.json").exists()


def test_bench_metrics_quick_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "metrics.py"), "--quick",
                          "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "accuracy, auc" in out.stdout and "vs none" in out.stdout
    assert (tmp_path / "metrics.json").exists()
