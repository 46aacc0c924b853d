# The dense forward pass of one layer:
#
#     z_in  = z_out_prev @ W + b        (n, n_in) @ (n_in, n_out) + (n_out,)
#     z_out = sigma(z_in)
#
# One gemm (BLAS, or own loops below the threshold in _blas.pyx) writes z_in; then one sweep over
# the rows adds the bias and applies sigma while each row is still in cache (the fused epilogue),
# parallelised over rows with prange when the layer is large enough (_openmp.work_threads).
# z_in is kept because backpropagation needs it (gelu's derivative) and bp shows it to the user;
# when the caller passes the same buffer for z_in and z_out the activation is applied in place.
#
# mixed_bfloat16 (dense_forward_bf16_core): the same with the product in bf16 through bpcore._bf16
# (z_out_prev rounded while it is packed, W packed beforehand by the engine once per update), the
# bias and sigma in float32 by the same epilogue.

from cython.parallel cimport prange

from bpcore._activations cimport SOFTMAX, activate_row, sigma_cost, softmax_rows
from bpcore cimport _bf16
from bpcore._blas cimport gemm, threads_after_gemm
from bpcore._openmp cimport work_threads


cdef void dense_forward_core(const floating* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                             Py_ssize_t ld_prev, const floating* W, const floating* b,
                             Py_ssize_t n_out, int act, floating alpha,
                             floating* z_in, floating* z_out, int n_threads) noexcept nogil:
    if n == 0 or n_out == 0:
        return
    gemm(False, False, n, n_out, n_in, <floating>1, z_out_prev, ld_prev, W, n_out,
         <floating>0, z_in, n_out)
    _epilogue(b, n, n_out, act, alpha, z_in, z_out,
              threads_after_gemm(n, n_out, n_in, n_threads))


cdef int dense_forward_bf16_core(const float* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                                 Py_ssize_t ld_prev, int path, const void* W_packed,
                                 const float* b, Py_ssize_t n_out, int act, float alpha,
                                 float* z_in, float* z_out, int n_threads) noexcept nogil:
    """As dense_forward_core with W packed by _bf16.pack_b(path, False, n_in, n_out, W);
    returns -1 if the product's scratch could not be allocated."""
    if n == 0 or n_out == 0:
        return 0
    if _bf16.gemm_packed(path, False, n, n_out, n_in, 1.0, z_out_prev, ld_prev, W_packed, 0.0,
                         z_in, n_out, NULL, _bf16.BF16_ACT_NONE, n_threads) != 0:
        return -1
    # after bp's own kernel no BLAS pool spins beside an OpenMP epilogue; after the fallback's
    # sgemm one may (threads_after_gemm)
    _epilogue(b, n, n_out, act, alpha, z_in, z_out,
              n_threads if path != _bf16.BF16_PATH_FALLBACK
              else threads_after_gemm(n, n_out, n_in, n_threads))
    return 0


cdef inline void _epilogue(const floating* b, Py_ssize_t n, Py_ssize_t n_out, int act,
                           floating alpha, floating* z_in, floating* z_out,
                           int n_threads) noexcept nogil:
    """z_in += b; z_out = sigma(z_in), row by row while each row is in cache."""
    cdef Py_ssize_t i
    cdef int nt = work_threads(n * n_out * sigma_cost(act), n, n_threads)
    if nt == 1 and act == SOFTMAX:  # the whole block's exponentials in one vectorised call
        softmax_rows(b, z_in, z_out, n, n_out)
    elif nt == 1:
        for i in range(n):
            activate_row(act, alpha, b, z_in + i * n_out, z_out + i * n_out, n_out)
    else:
        for i in prange(n, num_threads=nt, schedule="static"):
            activate_row(act, alpha, b, z_in + i * n_out, z_out + i * n_out, n_out)


def dense_forward(const floating[:, ::1] z_out_prev, const floating[:, ::1] W,  # IN
                  const floating[::1] b,  # IN (None: no bias)
                  floating[:, ::1] z_in, floating[:, ::1] z_out,  # OUT (may be one buffer)
                  int activation, double alpha, int n_threads):
    """z_in = z_out_prev @ W + b; z_out = sigma(z_in). Shapes and dtypes are checked by the caller
    (bp.kernels); this entry point trusts them."""
    cdef Py_ssize_t n = z_out_prev.shape[0]
    cdef const floating* b_ptr = NULL if b is None else &b[0]
    if n == 0:
        return
    with nogil:
        dense_forward_core(&z_out_prev[0, 0], n, z_out_prev.shape[1], z_out_prev.shape[1],
                           &W[0, 0], b_ptr, W.shape[1], activation,
                           <floating>alpha, &z_in[0, 0], &z_out[0, 0], n_threads)
