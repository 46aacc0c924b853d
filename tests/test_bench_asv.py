"""The asv suite (benchmarks/) runs: every benchmark class, every parameter combination, one call
each, in this process (asv itself is not needed). Speed is never asserted."""

import importlib
import itertools
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmarks (one call each)

ROOT = Path(__file__).resolve().parents[1]


def _benchmarks():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        for path in sorted((ROOT / "benchmarks" / "benchmarks").glob("[!_]*.py")):
            module = importlib.import_module(f"benchmarks.{path.stem}")
            for name, cls in vars(module).items():
                if isinstance(cls, type) and cls.__module__ == module.__name__ and any(
                        attr.startswith("time_") for attr in dir(cls)):
                    yield pytest.param(cls, id=f"{path.stem}.{name}")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.parametrize("cls", list(_benchmarks()))
def test_benchmark_runs_once(cls):
    params = getattr(cls, "params", ())
    if params and not isinstance(params[0], (list, tuple)):
        params = (params,)  # asv's single-parameter form
    names = getattr(cls, "param_names", [])
    assert len(names) == len(params), f"{cls.__name__}: param_names and params disagree"
    for combination in itertools.product(*params):
        bench = cls()
        if hasattr(bench, "setup"):
            bench.setup(*combination)
        for attr in dir(cls):
            if attr.startswith("time_"):
                getattr(bench, attr)(*combination)


def test_the_suite_covers_fit_predict_partial_fit_and_the_estimators():
    ids = {p.id for p in _benchmarks()}
    assert {"model.FitStep", "model.DigitsFit", "model.Predict", "model.PartialFit",
            "sklearn.MLPClassifierFit", "sklearn.MLPRegressorFit"} <= ids
