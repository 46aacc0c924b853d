# What the OpenMP runtime says, for bp._threads (which alone settles the thread count:
# kernels never decide it, they receive it as their last argument).

from bpcore._openmp cimport (BP_OPENMP_ENABLED, MIN_PARALLEL_WORK, omp_get_max_threads,
                             omp_get_num_procs)


def openmp_enabled():
    """True if bpcore was compiled with OpenMP."""
    return bool(BP_OPENMP_ENABLED)


def omp_max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS if set, else the number of logical CPUs (1 if serial)."""
    return omp_get_max_threads()


def omp_num_procs():
    """omp_get_num_procs(): processors available to the process (1 if serial)."""
    return omp_get_num_procs()


def min_parallel_work():
    """Elements per call below which the row loops stay serial (MIN_PARALLEL_WORK, _openmp.pxd).

    The tests size their arrays above it so that two threads really run.
    """
    return MIN_PARALLEL_WORK
