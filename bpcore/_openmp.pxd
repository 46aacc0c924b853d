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
# work_threads is a real function in _openmp.pyx, not an inline here, so that the threshold is one
# variable for all the kernel modules, which the crossover benchmark can move
# (_openmp._set_min_parallel_work): one indirect call per kernel call, nothing per element.
cdef extern from *:
    """
    #define BP_MIN_PARALLEL_WORK 32768
    """
    Py_ssize_t MIN_PARALLEL_WORK "BP_MIN_PARALLEL_WORK"


cdef int work_threads(Py_ssize_t work, Py_ssize_t n_rows, int n_threads) noexcept nogil
