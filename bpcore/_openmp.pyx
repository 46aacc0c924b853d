# What the OpenMP runtime says, for bp._threads (which alone settles the thread count:
# kernels never decide it, they receive it as their last argument).

from bpcore._openmp cimport (BP_OPENMP_ENABLED, MIN_PARALLEL_WORK, omp_get_max_threads,
                             omp_get_num_procs)


def openmp_enabled():
    """True if bpcore was compiled with OpenMP."""
    return bool(BP_OPENMP_ENABLED)


def omp_max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS if set, else the number of logical CPUs
    (1 if serial)."""
    return omp_get_max_threads()


def omp_num_procs():
    """omp_get_num_procs(): processors available to the process (1 if serial)."""
    return omp_get_num_procs()


cdef Py_ssize_t _min_parallel_work = MIN_PARALLEL_WORK


cdef int work_threads(Py_ssize_t work, Py_ssize_t n_rows, int n_threads) noexcept nogil:
    """How many of the n_threads a row loop over `work` elements should use (1 = stay serial)."""
    if n_threads <= 1 or work < _min_parallel_work or n_rows < 2:
        return 1
    if n_rows < n_threads:
        return <int>n_rows
    return n_threads


def min_parallel_work():
    """Elements per call below which the row loops stay serial (MIN_PARALLEL_WORK, _openmp.pxd).

    The tests size their arrays above it so that two threads really run.
    """
    return _min_parallel_work


def _set_min_parallel_work(Py_ssize_t work):
    """For bench/kernels.py --parallel-crossover only: move the threshold, return the old one.
    Not thread-safe; never call it while kernels run."""
    global _min_parallel_work
    old = _min_parallel_work
    _min_parallel_work = work
    return old
