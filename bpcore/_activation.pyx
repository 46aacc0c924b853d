# An activation as an operation of its own (bp.Activation), over rows of width m:
#
#     forward    z_out = sigma(z_in)                      z_in is the previous operation's output
#     backward   g_prev = g * sigma'(z_in)                g = dL/dz_out; for softmax the row's
#                                                         Jacobian-vector product (_activations.pxd)
#
# sigma and sigma' are _activations.pxd's row functions, dispatched by the activation's code, so
# an activation added there (its code, its row of sigma and of sigma') is an operation here with
# no change to this file. Rows are independent: parallel over rows above the threshold.

from libc.string cimport memcpy
from cython.parallel cimport prange

from bpcore._activations cimport (activate_row, backprop_row, sigma_cost,
                                  sigma_prime_cost)
from bpcore._openmp cimport work_threads


cdef void activation_forward_core(const floating* z_in, Py_ssize_t n, Py_ssize_t m, int act,
                                  floating alpha, floating* z_out, int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nt = work_threads(n * m * sigma_cost(act), n, n_threads)
    # activate_row writes z_in only when it adds a bias (NULL here): the cast is safe
    if nt == 1:
        for i in range(n):
            activate_row(act, alpha, <const floating*>NULL, <floating*>z_in + i * m,
                         z_out + i * m, m)
    else:
        for i in prange(n, num_threads=nt, schedule="static"):
            activate_row(act, alpha, <const floating*>NULL, <floating*>z_in + i * m,
                         z_out + i * m, m)


cdef void activation_backward_core(const floating* z_in, const floating* z_out,
                                   const floating* g, Py_ssize_t n, Py_ssize_t m, int act,
                                   floating alpha, floating* g_prev, int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nt = work_threads(n * m * sigma_prime_cost(act), n, n_threads)
    if g_prev != g:
        memcpy(g_prev, g, n * m * sizeof(floating))
    if nt == 1:
        for i in range(n):
            backprop_row(act, alpha, z_in + i * m, z_out + i * m, g_prev + i * m, m)
    else:
        for i in prange(n, num_threads=nt, schedule="static"):
            backprop_row(act, alpha, z_in + i * m, z_out + i * m, g_prev + i * m, m)


def activation_forward(const floating[:, ::1] z_in,  # IN
                       int activation, double alpha,
                       floating[:, ::1] z_out,  # OUT
                       int n_threads):
    """z_out = sigma(z_in). Inputs are validated by the caller."""
    if z_in.shape[0] == 0:
        return
    with nogil:
        activation_forward_core(&z_in[0, 0], z_in.shape[0], z_in.shape[1], activation,
                                <floating>alpha, &z_out[0, 0], n_threads)


def activation_backward(const floating[:, ::1] z_in, const floating[:, ::1] z_out,  # IN
                        const floating[:, ::1] g,  # IN
                        int activation, double alpha,
                        floating[:, ::1] g_prev,  # OUT
                        int n_threads):
    """g_prev = J_sigma(z_in)^T g. Inputs are validated by the caller."""
    if g.shape[0] == 0:
        return
    with nogil:
        activation_backward_core(&z_in[0, 0], &z_out[0, 0], &g[0, 0], g.shape[0], g.shape[1],
                                 activation, <floating>alpha, &g_prev[0, 0], n_threads)
