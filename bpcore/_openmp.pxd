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
# more than a layer of a small network takes to compute. A row loop stays serial while
# elements x cost < MIN_PARALLEL_WORK, where cost weighs what one element takes (the COST_ codes).
# Measured with bench/kernels.py --parallel-crossover (measured: see bench/README.md, OpenMP
# crossovers): 2 threads break even at tens of thousands of elements for bias + identity/relu
# right after the gemm (float32; float64 barely gains), at a few thousand for the output delta
# (mse) and SGD, below a thousand for sigmoid and tanh (exp/tanh per element).
# A copy-like pass over rows the gemm has just written gains least (presumably because it is bound
# by memory, and the rows sit in the cache of the core that ran the gemm). So
# MIN_PARALLEL_WORK is the float32 crossover of that cheapest sweep, and the others weigh more per
# element: 32768 / 8 = 4096 and 32768 / 32 = 1024 elements.
# work_threads is a real function in _openmp.pyx, not an inline here, so that the threshold is one
# variable for all the kernel modules, which the crossover benchmark can move
# (_openmp._set_min_parallel_work): one indirect call per kernel call, nothing per element.
cdef extern from *:
    """
    #define BP_MIN_PARALLEL_WORK 32768
    """
    Py_ssize_t MIN_PARALLEL_WORK "BP_MIN_PARALLEL_WORK"

cdef enum:
    COST_EPILOGUE = 1         # a copy-like pass over rows a gemm just wrote (bias, relu, sigma')
    COST_STREAM = 8           # an elementwise pass over arrays from memory (updates, output delta)
    COST_TRANSCENDENTAL = 32  # an exp, tanh or erf per element (sigmoid, tanh, gelu, softmax, logs)


cdef int work_threads(Py_ssize_t work, Py_ssize_t n_rows, int n_threads) noexcept nogil
