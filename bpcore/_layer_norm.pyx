# Layer normalisation over each row of width m (bp.LayerNormalization), gamma and beta (m,):
#
#     forward    mu = mean_j z_in[j];  var = mean_j (z_in[j] - mu)^2;  rstd = 1 / sqrt(var + eps)
#                xhat = (z_in - mu) rstd;  z_out = gamma xhat + beta
#     backward   gg = g gamma    (g = dL/dz_out)
#                g_prev = rstd (gg - mean_j gg - xhat mean_j(gg xhat))      dL/dz_in, per row
#                grad_gamma = acc grad_gamma + sum_rows g xhat;  grad_beta = acc grad_beta + sum_rows g
#
# The row's statistics enter the error signal through the two means: each output depends on every
# input of its row. The biased variance (divide by m), as Keras and PyTorch. Means and variances
# are summed in double whatever the dtype. xhat and rstd are cached for the backward pass.
# Rows are independent: the row passes run over rows in parallel above the threshold; the column
# sums of the gradients run over the rows in order, so the bits do not depend on the threads.
# gamma NULL: scale=False (gamma = 1, no grad_gamma); beta NULL: center=False.

from libc.math cimport sqrt
from cython.parallel cimport prange

from bpcore._openmp cimport COST_STREAM, work_threads


cdef inline double _sum(const floating* x, Py_ssize_t m) noexcept nogil:
    """sum_j x[j] in double, over four interleaved partial sums: without -ffast-math the
    compiler keeps one chain of dependent additions, four chains run four times as fast; the
    order is fixed, so the bits are too."""
    cdef Py_ssize_t j
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    for j in range(0, m - 3, 4):
        s0 += x[j]
        s1 += x[j + 1]
        s2 += x[j + 2]
        s3 += x[j + 3]
    for j in range(m - m % 4, m):
        s0 += x[j]
    return (s0 + s1) + (s2 + s3)


cdef inline double _sum_sq_dev(const floating* x, Py_ssize_t m, double mu) noexcept nogil:
    """sum_j (x[j] - mu)^2 in double, as _sum."""
    cdef Py_ssize_t j
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, d0, d1, d2, d3
    for j in range(0, m - 3, 4):
        d0, d1, d2, d3 = x[j] - mu, x[j + 1] - mu, x[j + 2] - mu, x[j + 3] - mu
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
    for j in range(m - m % 4, m):
        d0 = x[j] - mu
        s0 += d0 * d0
    return (s0 + s1) + (s2 + s3)


cdef void _scale_shift(const floating* xhat, Py_ssize_t m, const floating* gamma,
                       const floating* beta, floating* y) noexcept nogil:
    """y = gamma xhat + beta, the absent ones left out (a loop per case: no branch inside)."""
    cdef Py_ssize_t j
    if gamma != NULL and beta != NULL:
        for j in range(m):
            y[j] = gamma[j] * xhat[j] + beta[j]
    elif gamma != NULL:
        for j in range(m):
            y[j] = gamma[j] * xhat[j]
    elif beta != NULL:
        for j in range(m):
            y[j] = xhat[j] + beta[j]
    elif y != xhat:
        for j in range(m):
            y[j] = xhat[j]


cdef inline void _forward_row(const floating* x, Py_ssize_t m, const floating* gamma,
                              const floating* beta, double eps, floating* xhat, double* rstd,
                              floating* y) noexcept nogil:
    cdef Py_ssize_t j
    cdef double mu = _sum(x, m) / m
    cdef double r = 1.0 / sqrt(_sum_sq_dev(x, m, mu) / m + eps)
    rstd[0] = r
    for j in range(m):
        xhat[j] = <floating>((x[j] - mu) * r)
    _scale_shift(xhat, m, gamma, beta, y)


cdef void layer_norm_forward_core(const floating* z_in, Py_ssize_t n, Py_ssize_t m,
                                  const floating* gamma, const floating* beta, double eps,
                                  floating* xhat, double* rstd, floating* z_out,
                                  int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nt = work_threads(n * m * COST_STREAM, n, n_threads)
    if nt == 1:
        for i in range(n):
            _forward_row(z_in + i * m, m, gamma, beta, eps, xhat + i * m, rstd + i, z_out + i * m)
    else:
        for i in prange(n, num_threads=nt, schedule="static"):
            _forward_row(z_in + i * m, m, gamma, beta, eps, xhat + i * m, rstd + i, z_out + i * m)


cdef inline void _backward_row(const floating* xhat, double rstd, const floating* g,
                               Py_ssize_t m, const floating* gamma,
                               floating* g_prev) noexcept nogil:
    # g_prev holds gg = g gamma first (then the result in place): both means read it
    cdef Py_ssize_t j
    cdef double a, c, s0 = 0, s1 = 0, s2 = 0, s3 = 0
    if gamma != NULL:
        for j in range(m):
            g_prev[j] = g[j] * gamma[j]
    elif g_prev != g:
        for j in range(m):
            g_prev[j] = g[j]
    a = _sum(g_prev, m) / m
    for j in range(0, m - 3, 4):
        s0 += <double>g_prev[j] * xhat[j]
        s1 += <double>g_prev[j + 1] * xhat[j + 1]
        s2 += <double>g_prev[j + 2] * xhat[j + 2]
        s3 += <double>g_prev[j + 3] * xhat[j + 3]
    for j in range(m - m % 4, m):
        s0 += <double>g_prev[j] * xhat[j]
    c = ((s0 + s1) + (s2 + s3)) / m
    for j in range(m):
        g_prev[j] = <floating>(rstd * (g_prev[j] - a - xhat[j] * c))


cdef void norm_column_sums(const floating* g, const floating* xhat, Py_ssize_t n, Py_ssize_t m,
                           floating acc, floating* grad_gamma, floating* grad_beta) noexcept nogil:
    """grad_gamma = acc grad_gamma + sum_rows g xhat; grad_beta = acc grad_beta + sum_rows g
    (either may be NULL), the rows in order (each column's sum runs down the rows; the loop
    over columns inside vectorises)."""
    cdef Py_ssize_t i, j
    if grad_gamma != NULL:
        for j in range(m):
            grad_gamma[j] = acc * grad_gamma[j] if acc != 0 else 0
        for i in range(n):
            for j in range(m):
                grad_gamma[j] = grad_gamma[j] + g[i * m + j] * xhat[i * m + j]
    if grad_beta != NULL:
        for j in range(m):
            grad_beta[j] = acc * grad_beta[j] if acc != 0 else 0
        for i in range(n):
            for j in range(m):
                grad_beta[j] = grad_beta[j] + g[i * m + j]


cdef void layer_norm_backward_core(const floating* xhat, const double* rstd, const floating* g,
                                   Py_ssize_t n, Py_ssize_t m, const floating* gamma,
                                   floating acc, floating* grad_gamma, floating* grad_beta,
                                   floating* g_prev, int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nt = work_threads(n * m * COST_STREAM, n, n_threads)
    norm_column_sums(g, xhat, n, m, acc, grad_gamma, grad_beta)
    if g_prev == NULL:
        return
    if nt == 1:
        for i in range(n):
            _backward_row(xhat + i * m, rstd[i], g + i * m, m, gamma, g_prev + i * m)
    else:
        for i in prange(n, num_threads=nt, schedule="static"):
            _backward_row(xhat + i * m, rstd[i], g + i * m, m, gamma, g_prev + i * m)


def layer_norm_forward(const floating[:, ::1] z_in,  # IN
                       const floating[::1] gamma, const floating[::1] beta,  # IN (None: absent)
                       double eps,
                       floating[:, ::1] xhat, double[::1] rstd,  # OUT (the cache)
                       floating[:, ::1] z_out,  # OUT
                       int n_threads):
    """Layer normalisation of each row (see the header). Inputs are validated by the caller."""
    if z_in.shape[0] == 0:
        return
    with nogil:
        layer_norm_forward_core(&z_in[0, 0], z_in.shape[0], z_in.shape[1],
                                NULL if gamma is None else &gamma[0],
                                NULL if beta is None else &beta[0], eps, &xhat[0, 0], &rstd[0],
                                &z_out[0, 0], n_threads)


def layer_norm_backward(const floating[:, ::1] xhat, const double[::1] rstd,  # IN
                        const floating[:, ::1] g, const floating[::1] gamma,  # IN
                        double acc,
                        floating[::1] grad_gamma, floating[::1] grad_beta,  # OUT (None: absent)
                        floating[:, ::1] g_prev,  # OUT (None: not needed)
                        int n_threads):
    """The backward pass of layer normalisation (see the header)."""
    if g.shape[0] == 0:
        return
    with nogil:
        layer_norm_backward_core(&xhat[0, 0], &rstd[0], &g[0, 0], g.shape[0], g.shape[1],
                                 NULL if gamma is None else &gamma[0], <floating>acc,
                                 NULL if grad_gamma is None else &grad_gamma[0],
                                 NULL if grad_beta is None else &grad_beta[0],
                                 NULL if g_prev is None else &g_prev[0, 0], n_threads)
