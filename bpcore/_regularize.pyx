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

from bpcore._openmp cimport COST_STREAM, work_threads

cdef extern from *:
    """
    #define BP_PENALTY_CHUNKS 64
    """
    Py_ssize_t PENALTY_CHUNKS "BP_PENALTY_CHUNKS"


cdef inline double _penalty_range(const floating* W, Py_ssize_t lo, Py_ssize_t hi, floating l1,
                                  floating l2, floating* grad_W) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating w, sign
    cdef double abs_sum = 0, sq_sum = 0
    for i in range(lo, hi):
        w = W[i]
        sign = (w > 0) - (w < 0)
        abs_sum += sign * w
        sq_sum += (<double>w) * w
        if grad_W != NULL:
            grad_W[i] = grad_W[i] + (l1 * sign + 2 * l2 * w)
    return l1 * abs_sum + l2 * sq_sum


cdef double penalty_core(const floating* W, Py_ssize_t n, double l1, double l2, floating* grad_W,
                         int n_threads) noexcept nogil:
    """R(W) in double; grad_W += dR/dW unless grad_W is NULL."""
    cdef double partial[64]
    cdef double total = 0
    cdef Py_ssize_t c, lo, size = (n + PENALTY_CHUNKS - 1) // PENALTY_CHUNKS
    cdef int nt = work_threads(n * COST_STREAM, PENALTY_CHUNKS, n_threads)
    if nt == 1:
        for c in range(PENALTY_CHUNKS):
            lo = c * size
            partial[c] = _penalty_range(W, lo, min(n, lo + size), <floating>l1, <floating>l2,
                                        grad_W)
    else:
        for c in prange(PENALTY_CHUNKS, num_threads=nt, schedule="static"):
            lo = c * size
            partial[c] = _penalty_range(W, lo, min(n, lo + size), <floating>l1, <floating>l2,
                                        grad_W)
    for c in range(PENALTY_CHUNKS):
        total += partial[c]
    return total


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
