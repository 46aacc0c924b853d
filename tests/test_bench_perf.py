"""The benchmarks run (a tiny --quick configuration in a subprocess). Speed is never asserted:
these only check that bench/train_step.py, bench/fit.py and bench/api.py work and write their
outputs. PyTorch and JAX are optional peers; the benchmarks skip what is not installed.
scikit-learn is a test dependency (its digits data set), so it is imported plainly."""

import json
import os
import re
import subprocess
import sys

import pytest
import sklearn  # noqa: F401  (bench/fit.py trains on its digits data set; a declared test dependency)

pytestmark = pytest.mark.slow  # each test runs a benchmark script in a subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, tmp_path, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--quick",
                           "--threads", "1", "--out", str(tmp_path), *extra],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_train_step_benchmark_runs(tmp_path):
    proc = _run("train_step.py", tmp_path)
    assert "| xor |" in proc.stdout
    with open(tmp_path / "train_step.json") as f:
        results = json.load(f)
    impls = {r["impl"] for r in results["rows"]}
    assert {"bp", "blas limit", "numpy", "reference"} <= impls
    # every table names the CPU, its vector extensions and the BLAS kernel bp's worker sees
    assert "BLAS: " in proc.stdout and "load average" in proc.stdout
    assert all(r["of_limit"] > 0 for r in results["rows"])
    assert all(r["median_us"] > 0 and r["min_us"] <= r["median_us"] for r in results["rows"])
    assert (tmp_path / "train_step.png").stat().st_size > 0
    assert (tmp_path / "train_step.md").exists()


def test_fit_benchmark_runs(tmp_path):
    proc = _run("fit.py", tmp_path)
    assert "| digits |" in proc.stdout
    with open(tmp_path / "fit.json") as f:
        results = json.load(f)
    assert any(r["impl"] == "bp" and r["epochs_per_s"] > 0 for r in results["rows"])
    assert any(r["impl"] == "numpy" for r in results["rows"])
    assert "BLAS: " in proc.stdout


def test_api_benchmark_runs(tmp_path):
    proc = _run("api.py", tmp_path)
    with open(tmp_path / "api.json") as f:
        results = json.load(f)
    entries = {r["entry"] for r in results["rows"]}
    assert entries == {"compiled step", "fit step", "partial_fit", "zero_grad/backward/step",
                       "gradients"}
    assert all(r["median_ns"] > 0 for r in results["rows"])
    assert "x fit's step" in proc.stdout and "BLAS: " in proc.stdout


def test_breakdown_benchmark_runs():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "breakdown.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for row in ("L0 forward", "L0 gradients", "L0 error signal", "loss + output delta",
                "SGD update", "whole step (engine)"):
        assert row in proc.stdout


def test_predict_benchmark_runs(tmp_path):
    proc = _run("predict.py", tmp_path)
    assert re.search(r"\|\s+digits \|", proc.stdout)
    with open(tmp_path / "predict.json") as f:
        results = json.load(f)
    impls = {r["impl"] for r in results["rows"]}
    assert {"bp", "bp out=", "numpy", "products"} <= impls
    assert {r["rows"] for r in results["rows"]} == {1, 64}
    assert all(r["median_us"] > 0 for r in results["rows"])
    assert all(r["p99_us"] >= r["median_us"] for r in results["rows"] if r["rows"] == 1)
    assert (tmp_path / "predict.png").stat().st_size > 0
