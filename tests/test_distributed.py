"""bp.distributed: data-parallel helpers over mpi4py.

The MPI tests launch ``mpiexec -n p python -m mpi4py tests/mpi/<script>`` as subprocesses (with
timeouts; ``-m mpi4py`` turns an exception on one rank into an abort of the job, not a hang) and
the scripts assert on the ranks: against one process on the union batches (float64, rtol 1e-12)
and bit for bit across ranks. Each launch costs about a second, so there are few of them. Without
mpi4py or mpiexec they skip, except in CI, where they must run (test_ci_runs_the_mpi_tests).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bp
from bp import distributed

HERE = Path(__file__).parent
# the directory that holds the bp being tested, for the ranks' PYTHONPATH
BP_ROOT = str(Path(bp.__file__).resolve().parent.parent)
LAUNCHER_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")


def _mpiexec():
    """The mpiexec beside this python (where pip's mpich puts it), else the one on PATH."""
    return (shutil.which("mpiexec", path=os.path.dirname(sys.executable))
            or shutil.which("mpiexec"))


def _have_mpi():
    return importlib.util.find_spec("mpi4py") is not None and _mpiexec() is not None


needs_mpi = pytest.mark.skipif(not _have_mpi(), reason='needs mpi4py and an mpiexec: '
                               'pip install "bp[mpi]" mpich')


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["PYTHONPATH"] = BP_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # p ranks on a small machine: one thread each
    env.update(extra)
    return env


def run_ranks(n_ranks, script, *args, timeout=120):
    """Launch `script` on n_ranks; on failure the assertion shows the command and the ranks'
    output (args may be paths: the message joins their str)."""
    cmd = [_mpiexec(), "-n", str(n_ranks), sys.executable, "-m", "mpi4py", script, *args]
    cmd = [str(part) for part in cmd]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_ci_runs_the_mpi_tests():
    """In CI (CI=true) the MPI tests must run, not skip: mpi4py and mpiexec are installed."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("not in CI")
    assert _have_mpi(), "CI must install mpi4py and mpich (.ci/run) so the MPI tests run"


@pytest.mark.slow
@needs_mpi
def test_a_failing_launch_reports_the_ranks_output(tmp_path):
    # a path among the arguments, as the fit contract passes tmp_path: the failure message must
    # still be the ranks' output, not a TypeError from joining it
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('rank output before the failure', sys.argv[1])\n"
                      "raise SystemExit(3)\n")
    with pytest.raises(AssertionError, match="rank output before the failure") as info:
        run_ranks(2, script, tmp_path)
    assert str(tmp_path) in str(info.value)


# ---- the explicit loop: zero_grad / backward / allreduce_gradients / step -----------------------
@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("n_ranks", [2, 3, 4])
def test_explicit_loop_equals_one_process_on_the_union_batch(n_ranks):
    # SGD with momentum and clipping by the global norm, Adam, AdamW; sample weights; uneven
    # shards; broadcast of parameters and optimizer state; the misuse errors (see the script)
    assert f"ok p={n_ranks}" in run_ranks(n_ranks, HERE / "mpi" / "explicit_loop.py")


# ---- fit(..., comm=comm) ------------------------------------------------------------------------
@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("n_ranks", [2, 3, 4])
def test_fit_over_ranks_equals_one_process_on_the_union_batches(n_ranks, tmp_path):
    # the contract, for SGD with momentum (clipped by the global norm), Adam, AdamW, accumulate
    # 1 and 2, sample weights, uneven shards, validation metrics, the compiled and the Python step
    # loop; then shuffling, EarlyStopping, partial_fit, divergence on one rank, Ctrl-C on one
    # rank, save from rank 0 (see the script)
    assert f"ok p={n_ranks}" in run_ranks(n_ranks, HERE / "mpi" / "fit_contract.py", tmp_path)


@pytest.mark.slow
@needs_mpi
def test_batch_norm_statistics_stay_per_rank():
    # as PyTorch DDP without SyncBatchNorm: each rank's batch statistics and running statistics
    # are its own, the parameters one (see the script)
    assert "ok p=2" in run_ranks(2, HERE / "mpi" / "batch_norm.py")


@needs_mpi
def test_cli_trains_digits_data_parallel_prints_and_saves_once(tmp_path):
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "bp", "--distributed",
           "--epochs", "2", "--verbose", "2", "--output", str(tmp_path / "model.npz")]
    done = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "data-parallel over 2 MPI ranks: batch 32 per rank (global 64)" in out
    for line in ("Epoch 2/2", "test accuracy", "model saved to", "total "):
        assert out.count(line) == 1, f"{line!r} printed {out.count(line)} times:\n{out}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    assert bp.load(tmp_path / "model.npz").n_params == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


# ---- sharding (no MPI needed: a communicator is anything with Get_rank and Get_size) -----------
class FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("n_rows", [0, 1, 5, 12, 13])
def test_shard_is_contiguous_and_gives_the_remainder_to_the_first_ranks(size, n_rows):
    shards = [distributed.shard(n_rows, FakeComm(r, size)) for r in range(size)]
    assert shards[0].start == 0 and shards[-1].stop == n_rows
    for a, b in zip(shards, shards[1:]):
        assert a.stop == b.start
    lengths = [s.stop - s.start for s in shards]
    assert lengths == [len(part) for part in np.array_split(np.arange(n_rows), size)]


def test_shard_rejects_a_bad_row_count():
    with pytest.raises(ValueError, match=r"n_rows must be a non-negative int. Received: n_rows=-1"):
        distributed.shard(-1, FakeComm(0, 2))
    with pytest.raises(ValueError, match=r"Received: n_rows=2.5"):
        distributed.shard(2.5, FakeComm(0, 2))


def test_shard_rows_of_a_memmap_is_a_view_that_reads_nothing_else(tmp_path):
    X = np.arange(13 * 3, dtype=np.float64).reshape(13, 3)
    np.save(tmp_path / "X.npy", X)
    X_disk = np.load(tmp_path / "X.npy", mmap_mode="r")
    part = distributed.shard_rows(X_disk, FakeComm(1, 3))  # rows 5..8 of 13 over 3 ranks
    # a memmap view over the file: nothing is read until these rows are touched, and only they
    assert isinstance(part, np.memmap) and np.shares_memory(part, X_disk)
    def address(a):
        return a.__array_interface__["data"][0]
    assert address(part) - address(X_disk) == 5 * 3 * X.itemsize and part.shape == (4, 3)
    np.testing.assert_array_equal(part, X[5:9])


# ---- misuse: what is missing is named ---------------------------------------------------------
def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py -> ImportError
    with pytest.raises(ImportError, match=r'pip install "bp\[mpi\]"'):
        distributed.check_world()


def test_mpi4py_without_an_mpi_library_is_an_import_error(monkeypatch, tmp_path):
    # mpi4py's own import fails with RuntimeError when no MPI library loads; a fake package
    # that does the same stands in for it
    fake = tmp_path / "mpi4py"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "MPI.py").write_text("raise RuntimeError('cannot load MPI library')\n")
    for name in ("mpi4py", "mpi4py.MPI"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"could not load an MPI library.*pip install mpich"):
        distributed.check_world()


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("var", LAUNCHER_VARS[1:])
def test_a_foreign_launcher_is_detected(var):
    # an mpiexec of another MPI starts 2 processes that each see a world of 1: each would train
    # alone on its data; its variables say 2, and check_world refuses
    code = "from bp import distributed; print(distributed.check_world())"
    ok = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "1", ok.stderr
    bad = subprocess.run([sys.executable, "-c", code], env=_env(**{var: "2"}),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert f"started 2 processes ({var}=2) but MPI's world has 1" in bad.stderr, bad.stderr
