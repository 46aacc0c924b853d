# The dense operation as the engine runs it (its forward pass is _dense_forward.pyx):
#
#     forward    z_in = z_out_prev @ W + b;  z_out = sigma(z_in)          (dense_forward_core)
#     backward   delta = g * sigma'(z_in)       g = dL/dz_out, which the next operation wrote
#                                               into this one's delta buffer (the output layer's
#                                               delta comes from the loss: from_loss)
#                grad_W = beta grad_W + z_out_prev.T @ delta;  grad_b = beta grad_b + sum delta
#                g_prev = delta @ W.T           dL/d z_out_prev, for the operation before
#                                               (NULL: nothing before has parameters)
#
# Together with the previous Dense's sigma' this is the recursion
# delta[i] = (delta[i+1] @ W[i+1].T) * sigma'(z_in[i]) of _error_signal.hidden_delta_core, split
# where an operation ends: the product here, sigma' at the start of the previous Dense's backward.
# The same multiplications in the same order, so a stack of Dense layers gives the same bits.
# Both products go through _blas.gemm (the one place a matrix product is chosen); sigma' is a
# sweep over rows, parallel over rows when the layer is large enough (_openmp.work_threads).

from cython.parallel cimport prange

from bpcore._activations cimport backprop_row, sigma_prime_cost
from bpcore._blas cimport gemm
from bpcore._gradients cimport gradients_core
from bpcore._openmp cimport work_threads


cdef void dense_backward_core(const floating* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                              const floating* W, const floating* z_in, const floating* z_out,
                              Py_ssize_t n_out, int act, floating alpha, bint from_loss,
                              floating beta, floating* delta, floating* grad_W,
                              floating* grad_b, floating* g_prev, int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nt
    if n == 0:
        return
    if not from_loss:   # delta = g * sigma'(z_in), in place
        nt = work_threads(n * n_out * sigma_prime_cost(act), n, n_threads)
        if nt == 1:
            for i in range(n):
                backprop_row(act, alpha, z_in + i * n_out, z_out + i * n_out, delta + i * n_out,
                             n_out)
        else:
            for i in prange(n, num_threads=nt, schedule="static"):
                backprop_row(act, alpha, z_in + i * n_out, z_out + i * n_out, delta + i * n_out,
                             n_out)
    gradients_core(z_out_prev, n, n_in, n_in, delta, n_out, beta, grad_W, grad_b, n_threads)
    if g_prev != NULL:   # g_prev (n, n_in) = delta (n, n_out) @ W.T   (W is (n_in, n_out))
        gemm(False, True, n, n_in, n_out, <floating>1, delta, n_out, W, n_out,
             <floating>0, g_prev, n_in)


def dense_backward(const floating[:, ::1] z_out_prev, const floating[:, ::1] W,  # IN
                   const floating[:, ::1] z_in, const floating[:, ::1] z_out,  # IN
                   int activation, double alpha, bint from_loss, double beta,
                   floating[:, ::1] delta,  # IN/OUT: g in, delta out (unless from_loss)
                   floating[:, ::1] grad_W, floating[::1] grad_b,  # OUT (grad_b: None, no bias)
                   floating[:, ::1] g_prev,  # OUT (None: not needed)
                   int n_threads):
    """The dense operation's backward pass (see the header). Inputs are validated by the caller."""
    cdef Py_ssize_t n = delta.shape[0]
    cdef floating* gb = NULL if grad_b is None else &grad_b[0]
    cdef floating* gp = NULL if g_prev is None else &g_prev[0, 0]
    if n == 0:
        return
    with nogil:
        dense_backward_core(&z_out_prev[0, 0], n, W.shape[0], &W[0, 0], &z_in[0, 0],
                            &z_out[0, 0], W.shape[1], activation, <floating>alpha, from_loss,
                            <floating>beta, &delta[0, 0], &grad_W[0, 0], gb, gp, n_threads)
