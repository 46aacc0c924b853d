# Gradient accumulation for one layer, from its cached error signal delta:
#
#     grad_W = beta * grad_W + z_out_prev.T @ delta      (n_in, n) @ (n, n_out)
#     grad_b = beta * grad_b + sum_i delta[i, :]
#
# beta = 0 overwrites, beta = 1 accumulates micro-batches. Each weight's gradient is one entry of
# one product with the cached delta: the chain rule is never run again per weight.
#
# grad_W is one gemm (BLAS reads z_out_prev transposed in place). grad_b is a column sum, where a
# prange over rows with `grad_b[j] +=` would be a race (cython/cython#2316): instead each thread
# owns a block of whole columns and sums them over all rows in row order. Every column is therefore
# summed in the same order whatever the thread count, and the result is bit-identical for 1 or
# more threads.

from cython.parallel cimport prange

from bpcore._blas cimport gemm, threads_after_gemm
from bpcore._openmp cimport work_threads

# Columns per block: a block's accumulators stay in registers/L1 while the rows stream past.
cdef extern from *:
    """
    #define BP_COLUMN_BLOCK 64
    """
    Py_ssize_t COLUMN_BLOCK "BP_COLUMN_BLOCK"


cdef inline void _column_block(const floating* delta, Py_ssize_t n, Py_ssize_t m,
                               Py_ssize_t j0, Py_ssize_t j1, floating beta,
                               floating* out) noexcept nogil:
    cdef floating acc[64]
    cdef Py_ssize_t i, j
    for j in range(j1 - j0):
        acc[j] = 0
    for i in range(n):
        for j in range(j1 - j0):
            acc[j] = acc[j] + delta[i * m + j0 + j]
    for j in range(j1 - j0):
        out[j0 + j] = acc[j] if beta == 0 else beta * out[j0 + j] + acc[j]


cdef void column_sums(const floating* delta, Py_ssize_t n, Py_ssize_t m, floating beta,
                      floating* out, int n_threads) noexcept nogil:
    """out = beta * out + delta.sum(axis=0), delta (n, m) row-major; deterministic (see above)."""
    cdef Py_ssize_t blk, n_blocks = (m + COLUMN_BLOCK - 1) // COLUMN_BLOCK
    cdef int nt = work_threads(n * m, n_blocks, n_threads)
    if nt == 1:
        for blk in range(n_blocks):
            _column_block(delta, n, m, blk * COLUMN_BLOCK, min(m, (blk + 1) * COLUMN_BLOCK),
                          beta, out)
    else:
        for blk in prange(n_blocks, num_threads=nt, schedule="static"):
            _column_block(delta, n, m, blk * COLUMN_BLOCK, min(m, (blk + 1) * COLUMN_BLOCK),
                          beta, out)


cdef void gradients_core(const floating* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                         Py_ssize_t ld_prev, const floating* delta, Py_ssize_t n_out,
                         floating beta, floating* grad_W, floating* grad_b,
                         int n_threads) noexcept nogil:
    # grad_W (n_in, n_out) = z_out_prev.T (n_in, n) @ delta (n, n_out) + beta * grad_W
    gemm(True, False, n_in, n_out, n, <floating>1, z_out_prev, ld_prev, delta, n_out,
         beta, grad_W, n_out)
    if grad_b != NULL:
        column_sums(delta, n, n_out, beta, grad_b,
                    threads_after_gemm(n_in, n_out, n, n_threads))


def gradients(const floating[:, ::1] z_out_prev, const floating[:, ::1] delta,  # IN
              double beta,
              floating[:, ::1] grad_W, floating[::1] grad_b,  # OUT (grad_b: None if no bias)
              int n_threads):
    """grad_W = beta grad_W + z_out_prev.T @ delta; grad_b = beta grad_b + delta summed over rows.
    Inputs are validated by the caller (bp.kernels)."""
    cdef Py_ssize_t n = delta.shape[0]
    cdef floating* gb = NULL if grad_b is None else &grad_b[0]
    cdef floating dummy = 0
    # An empty batch contributes nothing: the gradient is beta * gradient.
    cdef const floating* zp = &dummy if n == 0 else &z_out_prev[0, 0]
    cdef const floating* d = &dummy if n == 0 else &delta[0, 0]
    with nogil:
        gradients_core(zp, n, grad_W.shape[0], grad_W.shape[0], d, grad_W.shape[1],
                       <floating>beta, &grad_W[0, 0], gb, n_threads)
