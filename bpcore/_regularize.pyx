# Weight penalties (Keras' L1, L2 and L1L2 regularisers): the penalty of a layer's W (or b) and
# its gradient, added to the gradient the backward pass wrote.
#
#     R(W) = l1 sum_k |W_k| + l2 sum_k W_k^2          (added to the step's loss)
#     grad_W += l1 sign(W) + 2 l2 W                    (sign(0) = 0, as Keras' and torch's)
#
# The training step (bpcore/_network.pyx) calls it once per optimizer step, after the micro-batches'
# gradients are summed and before the update, so the penalty is not scaled by the batch size:
# it is the Keras model.losses term. Parallel over fixed chunks summed in a fixed order (the same
# bits for any thread count), like sum_of_squares in _param_update.pyx; in the step it runs on
# one thread (it follows BLAS's products), so its cost is that of its loops, which are written
# to vectorise: a sum in lanes of the dtype, then a plain axpy-like sweep for the gradient
# (measured: see bench/README.md, Loops written to vectorise).

from cython.parallel cimport prange

from bpcore._activations cimport f_abs
from bpcore._openmp cimport COST_STREAM, work_threads

cdef extern from *:
    """
    #define BP_PENALTY_CHUNKS 64
    """
    Py_ssize_t PENALTY_CHUNKS "BP_PENALTY_CHUNKS"


cdef inline floating _term(floating w, bint absolute) noexcept nogil:
    return f_abs(w) if absolute else w * w


cdef inline double _chunk_sum(const floating* W, Py_ssize_t lo, Py_ssize_t hi,
                              bint absolute) noexcept nogil:
    # sum |W_k| (absolute) or sum W_k^2 over W[lo:hi]. Eight lanes (element i into lane i % 8)
    # each sum runs of eight terms in the dtype, and the runs go into eight sums in double,
    # added in a fixed order. Lanes of one type vectorise; a float32 term carried to double
    # costs a scalar conversion each (the pass then ran slower; measured: see bench/README.md,
    # Loops written to vectorise), and a run of eight float32
    # terms rounds at about 5e-7 relative, the float32 loss's own level.
    cdef double acc[8]
    cdef floating run[8]
    cdef Py_ssize_t i, j, k
    for k in range(8):
        acc[k] = 0
    i = lo
    while i + 64 <= hi:
        for k in range(8):
            run[k] = _term(W[i + k], absolute)
        for j in range(1, 8):
            for k in range(8):
                run[k] = run[k] + _term(W[i + 8 * j + k], absolute)
        for k in range(8):
            acc[k] = acc[k] + run[k]
        i = i + 64
    while i < hi:
        acc[0] = acc[0] + _term(W[i], absolute)
        i = i + 1
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline void _grad_range(const floating* W, Py_ssize_t lo, Py_ssize_t hi, floating l1,
                             floating two_l2, floating* grad_W) noexcept nogil:
    # Plain loops the compiler vectorises: l2 alone, the common case, is an axpy; with l1 the
    # sign is two selects. Written as l1 ((w > 0) - (w < 0)) in one loop for both (int
    # arithmetic, then a conversion), nothing vectorised and NumPy's g += c * W was faster
    # (measured: see bench/README.md, Loops written to vectorise).
    cdef Py_ssize_t i
    cdef floating w
    if l1 == 0:
        for i in range(lo, hi):
            grad_W[i] = grad_W[i] + two_l2 * W[i]
    else:
        for i in range(lo, hi):
            w = W[i]
            grad_W[i] = grad_W[i] + (((l1 if w > 0 else 0) - (l1 if w < 0 else 0))
                                     + two_l2 * w)


cdef double _total(const floating* W, Py_ssize_t n, bint absolute, int nt) noexcept nogil:
    # _chunk_sum over fixed chunks, the chunks' sums added in order: the same bits for any nt
    cdef double partial[64]
    cdef double total = 0
    cdef Py_ssize_t c, lo, size = (n + PENALTY_CHUNKS - 1) // PENALTY_CHUNKS
    if nt == 1:
        for c in range(PENALTY_CHUNKS):
            lo = c * size
            partial[c] = _chunk_sum(W, lo, min(n, lo + size), absolute)
    else:
        for c in prange(PENALTY_CHUNKS, num_threads=nt, schedule="static"):
            lo = c * size
            partial[c] = _chunk_sum(W, lo, min(n, lo + size), absolute)
    for c in range(PENALTY_CHUNKS):
        total += partial[c]
    return total


cdef double penalty_core(const floating* W, Py_ssize_t n, double l1, double l2, floating* grad_W,
                         int n_threads) noexcept nogil:
    """R(W) in double; grad_W += dR/dW unless grad_W is NULL. The sums are over fixed chunks
    in a fixed order, and only the terms whose coefficient is not 0 are summed."""
    cdef double value = 0
    cdef Py_ssize_t c, lo, size = (n + PENALTY_CHUNKS - 1) // PENALTY_CHUNKS
    cdef int nt = work_threads(n * COST_STREAM, PENALTY_CHUNKS, n_threads)
    if l2 != 0:
        value += l2 * _total(W, n, False, nt)
    if l1 != 0:
        value += l1 * _total(W, n, True, nt)
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
