"""The one place that settles thread counts: bp.effective_n_threads (scikit-learn's semantics),
bp.set_num_threads / get_num_threads and the bp.num_threads context manager (which also holds the
BLAS pools to the same count through threadpoolctl)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

import bp
from bpcore._openmp import openmp_enabled

ROOT = Path(__file__).resolve().parents[1]

needs_openmp = pytest.mark.skipif(not openmp_enabled(), reason="serial build: always 1 thread")


def run_with_env(code, **env):
    """Run `code` in a fresh interpreter (OpenMP reads OMP_NUM_THREADS once, at start-up) with
    bp imported from this tree; return what it prints as JSON."""
    environ = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    environ.update(env)
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + environ.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", "import json, bp\n" + code], cwd=ROOT,
                         env=environ, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


PROBE = ("print(json.dumps([bp.effective_n_threads(None), bp.effective_n_threads(-1), "
         "bp.effective_n_threads(3), bp.get_num_threads()]))")


@pytest.mark.slow
@needs_openmp
def test_omp_num_threads_is_respected():
    none, all_, three, current = run_with_env(PROBE, OMP_NUM_THREADS="1")
    assert (none, all_, three, current) == (1, 1, 3, 1)


@pytest.mark.slow
@needs_openmp
def test_omp_num_threads_may_exceed_the_cores():
    # as in scikit-learn: an explicit OMP_NUM_THREADS is the user's decision, even above the cores
    none, all_, _, current = run_with_env(PROBE, OMP_NUM_THREADS="5")
    assert (none, all_, current) == (5, 5, 5)


@pytest.mark.slow
@needs_openmp
def test_logical_cpus_when_not_only_physical_cores():
    # only_physical_cores=False counts what OpenMP would use: every CPU this process may run on
    code = ("import os\nprint(json.dumps([bp.effective_n_threads(None, only_physical_cores=False), "
            "bp.effective_n_threads(-1, only_physical_cores=False), "
            "bp.effective_n_threads(-2, only_physical_cores=False), bp.effective_n_threads(None), "
            "len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()]))")
    logical, all_, all_but_one, physical, available = run_with_env(code)
    assert logical == all_ == available
    assert all_but_one == max(1, logical - 1)
    assert 1 <= physical <= logical
    # OMP_NUM_THREADS wins over both counts
    assert run_with_env(code, OMP_NUM_THREADS="3")[:4] == [3, 3, 2, 3]


@pytest.mark.slow
@needs_openmp
def test_default_is_the_physical_cores():
    none, all_, three, current = run_with_env(PROBE)
    assert none == all_ == current
    assert 1 <= none <= (os.cpu_count() or 1)
    assert three == 3
    loky = pytest.importorskip("joblib.externals.loky")
    if hasattr(os, "sched_getaffinity") and loky.cpu_count() == len(os.sched_getaffinity(0)):
        # no CPU quota in play: an independent count of physical cores must agree
        assert none == loky.cpu_count(only_physical_cores=True)


@needs_openmp
def test_negative_counts_from_the_top():
    n_all = bp.effective_n_threads(-1)
    assert n_all == bp.effective_n_threads(None)
    assert bp.effective_n_threads(-2) == max(1, n_all - 1)
    assert bp.effective_n_threads(-1000) == 1
    assert bp.effective_n_threads(7) == 7


def test_zero_is_an_error():
    with pytest.raises(ValueError, match=r"n_threads == 0 is invalid: expected None, -1 \(all "
                                         r"cores\) or a nonzero int\. Received: n_threads=0"):
        bp.effective_n_threads(0)


@pytest.mark.parametrize("bad", [1.0, "2", True])
def test_non_integers_are_errors(bad):
    with pytest.raises(TypeError, match=r"n_threads must be None or an int, got "
                                        rf"{type(bad).__name__}: {bad!r}"):
        bp.effective_n_threads(bad)


def _blas_threads():
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_set_num_threads():
    before = bp.get_num_threads()
    bp.set_num_threads(1)
    assert bp.get_num_threads() == 1
    assert _blas_threads() <= {1}
    with pytest.raises(ValueError):
        bp.set_num_threads(0)
    assert bp.get_num_threads() == 1  # a rejected call changes nothing
    bp.set_num_threads(None)
    assert bp.get_num_threads() == bp.effective_n_threads(None) == before


@needs_openmp
def test_num_threads_context_manager_restores():
    bp.set_num_threads(None)
    default = bp.get_num_threads()
    with bp.num_threads(1):
        assert bp.get_num_threads() == 1
        assert _blas_threads() <= {1}
        with bp.num_threads(2):
            assert bp.get_num_threads() == 2
            assert _blas_threads() <= {2}
        assert bp.get_num_threads() == 1
        assert _blas_threads() <= {1}
    assert bp.get_num_threads() == default
    assert _blas_threads() <= {default}


def test_num_threads_restores_after_an_exception():
    default = bp.get_num_threads()
    with pytest.raises(RuntimeError):
        with bp.num_threads(1):
            raise RuntimeError("boom")
    assert bp.get_num_threads() == default
    with pytest.raises(ValueError):
        with bp.num_threads(0):
            pass
    assert bp.get_num_threads() == default


# ---- the answer is remembered, not re-read from /sys on every call -------------------------------

def test_topology_is_read_once_per_cpu_set(monkeypatch):
    from bp import _threads

    reads = []
    real = _threads._count_physical_cores
    monkeypatch.setattr(_threads, "_cores_of", {})
    monkeypatch.setattr(_threads, "_count_physical_cores", lambda cpus: reads.append(cpus) or real(cpus))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    first = [bp.effective_n_threads(None) for _ in range(5)]
    assert first == [real(frozenset(os.sched_getaffinity(0)))] * 5
    assert len(reads) == 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_a_changed_cpu_set_is_seen():
    # run in a child: narrowing this process's affinity would slow every later test
    code = ("import os\n"
            "before = bp.effective_n_threads(None)\n"
            "os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])\n"
            "print(json.dumps([before, bp.effective_n_threads(None), bp.get_num_threads()]))")
    before, after, current = run_with_env(code)
    assert before >= 1 and after == current == 1


def test_omp_num_threads_set_later_is_seen(monkeypatch):
    bp.set_num_threads(None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert bp.get_num_threads() == bp.effective_n_threads(None) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert bp.get_num_threads() == bp.effective_n_threads(None) == bp.effective_n_threads(-1)
