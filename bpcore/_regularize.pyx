# Weight penalties (Keras' L1, L2 and L1L2 regularisers), fused: one sweep over a layer's W (or b)
# that returns the penalty and adds its gradient to the gradient the backward pass wrote.
#
#     R(W) = l1 sum_k |W_k| + l2 sum_k W_k^2          (added to the step's loss)
#     grad_W += l1 sign(W) + 2 l2 W                    (sign(0) = 0, as Keras' and torch's)
#
# The training step (bpcore/_network.pyx) calls it once per optimizer step, after the micro-batches'
# gradients are summed and before the update, so the penalty is not scaled by the batch size:
# it is the Keras model.losses term. Parallel over fixed chunks summed in a fixed order (the same
# bits for any thread count), like sum_of_squares in _param_update.pyx.

from cython.parallel cimport prange
from libc.math cimport fabs

from bpcore._openmp cimport COST_STREAM, work_threads
from bpcore._param_update cimport sum_of_squares_core

cdef extern from *:
    """
    #define BP_PENALTY_CHUNKS 64
    """
    Py_ssize_t PENALTY_CHUNKS "BP_PENALTY_CHUNKS"


cdef inline double _chunk_abs_sum(const floating* W, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # eight running sums (element i into sum i % 8, added in a fixed order), as _param_update's
    # sum_of_squares: one sum would chain every addition on the one before; eight vectorise
    cdef double acc[8]
    cdef Py_ssize_t i, k
    for k in range(8):
        acc[k] = 0
    i = lo
    while i + 8 <= hi:
        for k in range(8):
            acc[k] = acc[k] + fabs(<double>W[i + k])
        i = i + 8
    while i < hi:
        acc[0] = acc[0] + fabs(<double>W[i])
        i = i + 1
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline void _grad_range(const floating* W, Py_ssize_t lo, Py_ssize_t hi, floating l1,
                             floating two_l2, floating* grad_W) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating w
    for i in range(lo, hi):
        w = W[i]
        grad_W[i] = grad_W[i] + (l1 * ((w > 0) - (w < 0)) + two_l2 * w)


cdef double penalty_core(const floating* W, Py_ssize_t n, double l1, double l2, floating* grad_W,
                         int n_threads) noexcept nogil:
    """R(W) in double; grad_W += dR/dW unless grad_W is NULL. The sums are over fixed chunks
    in a fixed order, and only the terms whose coefficient is not 0 are summed."""
    cdef double partial[64]
    cdef double value = 0, total
    cdef Py_ssize_t c, lo, size = (n + PENALTY_CHUNKS - 1) // PENALTY_CHUNKS
    cdef int nt = work_threads(n * COST_STREAM, PENALTY_CHUNKS, n_threads)
    if l2 != 0:
        value += l2 * sum_of_squares_core(W, n, n_threads)
    if l1 != 0:
        if nt == 1:
            for c in range(PENALTY_CHUNKS):
                lo = c * size
                partial[c] = _chunk_abs_sum(W, lo, min(n, lo + size))
        else:
            for c in prange(PENALTY_CHUNKS, num_threads=nt, schedule="static"):
                lo = c * size
                partial[c] = _chunk_abs_sum(W, lo, min(n, lo + size))
        total = 0
        for c in range(PENALTY_CHUNKS):
            total += partial[c]
        value += l1 * total
    if grad_W != NULL:
        if nt == 1:
            _grad_range(W, 0, n, <floating>l1, <floating>(2 * l2), grad_W)
        else:
            for c in prange(PENALTY_CHUNKS, num_threads=nt, schedule="static"):
                lo = c * size
                _grad_range(W, lo, min(n, lo + size), <floating>l1, <floating>(2 * l2), grad_W)
    return value


def penalty(const floating[::1] W,  # IN
            double l1, double l2,
            floating[::1] grad_W,  # OUT (added to; None: the value only)
            int n_threads):
    """R(W) = l1 sum|W| + l2 sum W^2 (double); adds l1 sign(W) + 2 l2 W to grad_W."""
    cdef floating* g = NULL if grad_W is None else &grad_W[0]
    cdef double value
    if W.shape[0] == 0:
        return 0.0
    with nogil:
        value = penalty_core(&W[0], W.shape[0], l1, l2, g, n_threads)
    return value
