"""The benchmarks run (a tiny --quick configuration in a subprocess). Speed is never asserted:
these only check that bench/train_step.py and bench/fit.py work and write their outputs.
PyTorch, JAX and scikit-learn are optional peers; the benchmarks skip what is not installed."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, tmp_path, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--quick",
                           "--threads", "1", "--out", str(tmp_path), *extra],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_train_step_benchmark_runs(tmp_path):
    pytest.importorskip("matplotlib")
    proc = _run("train_step.py", tmp_path)
    assert "| xor |" in proc.stdout
    with open(tmp_path / "train_step.json") as f:
        results = json.load(f)
    impls = {r["impl"] for r in results["rows"]}
    assert {"bp", "numpy"} <= impls
    assert all(r["median_us"] > 0 and r["min_us"] <= r["median_us"] for r in results["rows"])
    assert (tmp_path / "train_step.png").stat().st_size > 0
    assert (tmp_path / "train_step.md").exists()


def test_fit_benchmark_runs(tmp_path):
    pytest.importorskip("sklearn")  # the digits data set
    proc = _run("fit.py", tmp_path)
    assert "| digits |" in proc.stdout
    with open(tmp_path / "fit.json") as f:
        results = json.load(f)
    assert any(r["impl"] == "bp" and r["epochs_per_s"] > 0 for r in results["rows"])


def test_predict_benchmark_runs(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("onnx")
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
