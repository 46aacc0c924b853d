"""The one place where bp settles how many threads to use.

Kernels never decide their thread count; they receive it. This module decides it, with
scikit-learn's semantics (``sklearn.utils._openmp_helpers._openmp_effective_n_threads``):

* ``None``: the number of physical cores, unless ``OMP_NUM_THREADS`` is set, which wins;
* ``-1``: all of them; ``-2``: all but one, and so on;
* a positive integer: that many;
* ``0``: an error.

``bp.set_num_threads(n)`` is the one obvious way for a user to choose. It sets the count for
bp's OpenMP kernels *and* limits the BLAS thread pools (through threadpoolctl) to the same number,
so that the two pools, which run one after the other, never ask for more threads than there are
cores between them.
"""

import os
import threading
from contextlib import contextmanager

from bpcore._openmp import omp_max_threads, openmp_enabled

_lock = threading.Lock()
_n_threads = None  # what the user asked for through set_num_threads (None: the default)
_blas_limited_to = None  # what we last told the BLAS pools
# get_num_threads()'s answer, settled on first use and again after each set_num_threads: working
# it out (the CPU set, the topology files under /sys, OMP_NUM_THREADS) cost ~60 us, most of
# predict's time on one row. It is worked out again after set_num_threads and when
# OMP_NUM_THREADS changes (one dictionary look-up, ~0.2 us, tells).
_settled = None
_settled_env = None  # the OMP_NUM_THREADS the settled answer was worked out under


_cores_of = {}  # CPU set -> physical cores in it (the topology files are read once per set)


def _physical_cores():
    """Physical cores available to this process (logical CPUs where topology is unknown).

    Reading the topology costs ~100 us (two sysfs files per CPU) and every entry point asks;
    the answer is remembered per CPU set, so a changed affinity (``os.sched_setaffinity``) is
    still seen, at the cost of one ``sched_getaffinity`` call (~0.5 us)."""
    try:
        cpus = frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    count = _cores_of.get(cpus)
    if count is None:
        count = _cores_of[cpus] = _count_physical_cores(cpus)
    return count


def _count_physical_cores(cpus):
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f:
                package = f.read().strip()
            with open(base + "core_id") as f:
                core = f.read().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def effective_n_threads(n_threads=None, only_physical_cores=True):
    """Return the number of threads bp's kernels will use for `n_threads`.

    A serial build (no OpenMP) runs its own kernels on one thread whatever this says; the count
    still holds the BLAS pool.

    Parameters
    ----------
    n_threads : int or None, default=None
        None: physical cores, unless ``OMP_NUM_THREADS`` is set; -1: all available; -k: all but
        k - 1; a positive int: exactly that many (0 is an error).
    only_physical_cores : bool, default=True
        With ``n_threads=None`` and no ``OMP_NUM_THREADS``, count physical cores, not logical CPUs.

    Returns
    -------
    int
        The thread count (>= 1).

    Examples
    --------
    >>> import bp
    >>> bp.effective_n_threads(3)
    3
    >>> bp.effective_n_threads(-1) >= 1
    True
    """
    if isinstance(n_threads, bool) or not (n_threads is None or isinstance(n_threads, int)):
        raise TypeError(
            f"n_threads must be None or an int, got {type(n_threads).__name__}: {n_threads!r}"
        )
    if n_threads == 0:
        raise ValueError("n_threads == 0 is invalid: expected None, -1 (all cores) or a "
                         "nonzero int. Received: n_threads=0")
    env = _omp_num_threads_env()
    if env is not None:
        max_n = env
    elif only_physical_cores:
        max_n = _physical_cores()
    else:
        max_n = omp_max_threads() if openmp_enabled() else (os.cpu_count() or 1)
    if n_threads is None:
        return max_n
    if n_threads < 0:
        return max(1, max_n + n_threads + 1)
    return n_threads


def _omp_num_threads_env():
    """OMP_NUM_THREADS as an int (its first entry, as OpenMP reads a nested list), or None."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n > 0 else None


def get_num_threads():
    """Return the thread count bp uses now (for its kernels and, while it runs, the BLAS pools).

    Returns
    -------
    int
        The thread count.

    See Also
    --------
    set_num_threads, num_threads

    Examples
    --------
    >>> import bp
    >>> with bp.num_threads(1):
    ...     bp.get_num_threads()
    1
    """
    global _settled, _settled_env
    n, env = _settled, os.environ.get("OMP_NUM_THREADS")
    if n is None or env != _settled_env:
        n = _settled = effective_n_threads(_n_threads)
        _settled_env = env
    return n


def set_num_threads(n_threads):
    """Set the number of threads bp uses, for its OpenMP kernels and the BLAS that does its gemms.

    Parameters
    ----------
    n_threads : int or None
        As in ``effective_n_threads``; None restores the default (physical cores, or
        ``OMP_NUM_THREADS``).

    See Also
    --------
    num_threads : The same for a ``with`` block.

    Examples
    --------
    >>> import bp
    >>> bp.set_num_threads(1)
    >>> bp.get_num_threads()
    1
    >>> bp.set_num_threads(None)                        # back to the default
    """
    global _n_threads, _settled
    effective_n_threads(n_threads)  # validate before changing anything
    with _lock:
        _n_threads, _settled = n_threads, None
    _limit_blas(get_num_threads())


@contextmanager
def num_threads(n_threads):
    """Set bp's thread count for the duration of a ``with`` block.

    Parameters
    ----------
    n_threads : int or None
        As in ``set_num_threads``.

    Yields
    ------
    None
        Inside the block, bp runs on `n_threads`; after it, on the count before it.

    Examples
    --------
    >>> import bp
    >>> with bp.num_threads(1):
    ...     bp.get_num_threads()
    1
    """
    global _n_threads, _settled
    previous = _n_threads
    set_num_threads(n_threads)
    try:
        yield
    finally:
        with _lock:
            _n_threads, _settled = previous, None
        _limit_blas(get_num_threads())


def _limit_blas(n):
    """Hold the BLAS pools to n threads (cheap when nothing changes)."""
    global _blas_limited_to
    if _blas_limited_to == n:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
    _blas_limited_to = n


_blas_libs = None  # threadpoolctl's controllers of the loaded BLAS libraries, for hold_blas


def hold_blas(n):
    """Set the BLAS pools to n threads now, cheaply: ~1 us through threadpoolctl's cached
    per-library controllers (its ``limit()`` takes ~5 us, a fresh threadpool_limits ~1 ms). The
    training loop holds BLAS to one thread for steps too small for threads, and gives the count
    back afterwards: partial_fit does both on every call."""
    global _blas_libs, _blas_limited_to
    if _blas_limited_to == n:
        return
    if _blas_libs is None:
        from threadpoolctl import ThreadpoolController

        _blas_libs = ThreadpoolController().select(user_api="blas").lib_controllers
    for lib in _blas_libs:
        lib.set_num_threads(n)
    _blas_limited_to = n


def ensure_blas_limit():
    """Called by bp before heavy work: the BLAS pools use the same count as the kernels."""
    n = get_num_threads()
    if _blas_limited_to != n:
        hold_blas(n)  # predict may have left BLAS on one thread for small work
    return n


def blas_info():
    """threadpoolctl's view of the BLAS libraries loaded in this process."""
    from threadpoolctl import threadpool_info

    return [d for d in threadpool_info() if d.get("user_api") == "blas"]
