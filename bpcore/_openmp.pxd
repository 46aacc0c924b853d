# Guarded OpenMP helpers.
#
# Every direct omp_* call in bpcore goes through this file, so that bpcore also compiles (serially)
# with a compiler that has no OpenMP: without _OPENMP the calls become constants.
# (The same guard as scikit-learn's sklearn/utils/_openmp_helpers.pxd.)

cdef extern from *:
    """
    #ifdef _OPENMP
        #include <omp.h>
        #define BP_OPENMP_ENABLED 1
    #else
        #define BP_OPENMP_ENABLED 0
        #define omp_get_max_threads() 1
        #define omp_get_thread_num() 0
        #define omp_get_num_procs() 1
    #endif
    """
    bint BP_OPENMP_ENABLED
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_procs() noexcept nogil


# Threads lose on small work: an OpenMP region costs a few microseconds to wake and join its team,
# more than a layer of a small network takes to compute. Below MIN_PARALLEL_WORK elements (per
# call) the row loops stay serial. Measured with bench/kernels.py (elementwise epilogues on an
# AMD EPYC, 2 cores): 2 threads start to pay at about 20-40 thousand elements.
cdef extern from *:
    """
    #define BP_MIN_PARALLEL_WORK 32768
    """
    Py_ssize_t MIN_PARALLEL_WORK "BP_MIN_PARALLEL_WORK"


cdef inline int work_threads(Py_ssize_t work, Py_ssize_t n_rows, int n_threads) noexcept nogil:
    """How many of the n_threads a row loop over `work` elements should use (1 = stay serial)."""
    if n_threads <= 1 or work < MIN_PARALLEL_WORK or n_rows < 2:
        return 1
    if n_rows < n_threads:
        return <int>n_rows
    return n_threads
