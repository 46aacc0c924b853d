# Batch normalisation of each column of a batch of n rows (bp.BatchNormalization), gamma and
# beta (m,), the running statistics `running` = [mean (m,), var (m,)]:
#
#   training   mu_j = mean_rows z_in[:, j];  var_j = mean_rows (z_in[:, j] - mu_j)^2
#              rstd_j = 1 / sqrt(var_j + eps);  xhat = (z_in - mu) rstd;  z_out = gamma xhat + beta
#              running mean = momentum mean + (1 - momentum) mu
#              running var  = momentum var + (1 - momentum) var_j n / (n - 1)   (unbiased)
#   inference  mu and var are the running ones
#   backward   gg = g gamma    (g = dL/dz_out)
#     training   g_prev = rstd (gg - mean_rows gg - xhat mean_rows(gg xhat))   per column
#     inference  g_prev = rstd gg          (the statistics are constants)
#              grad_gamma = acc grad_gamma + sum_rows g xhat;  grad_beta = acc grad_beta + sum_rows g
#              (the same two column sums as the training error signal's means: summed once)
#
# In training every output of a column depends on every row of the batch through mu and var: the
# two means in the error signal. momentum is Keras' (0.99 keeps 99% of the running value;
# PyTorch's momentum is 1 - this); the running variance is PyTorch's unbiased one, and the
# normalisation uses the biased batch variance (both frameworks do). Sums in double, rows in
# order, one thread: the column statistics are a reduction over rows, and the bits must not
# depend on the thread count. stats (double, 4 m) keeps mu, rstd and the backward's two sums.

from libc.math cimport sqrt

from bpcore._layer_norm cimport _scale_shift


cdef void batch_norm_forward_core(const floating* z_in, Py_ssize_t n, Py_ssize_t m,
                                  const floating* gamma, const floating* beta, double eps,
                                  bint training, double momentum, floating* running,
                                  floating* xhat, double* stats, floating* z_out) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef double d
    cdef double* mu = stats
    cdef double* rstd = stats + m
    if training:
        for j in range(m):
            mu[j] = 0
            rstd[j] = 0
        for i in range(n):
            for j in range(m):
                mu[j] += z_in[i * m + j]
        for j in range(m):
            mu[j] /= n
        for i in range(n):
            for j in range(m):
                d = z_in[i * m + j] - mu[j]
                rstd[j] += d * d
        for j in range(m):
            d = rstd[j] / n     # the biased batch variance
            rstd[j] = 1.0 / sqrt(d + eps)
            if running != NULL and n > 1:
                running[j] = <floating>(momentum * running[j] + (1 - momentum) * mu[j])
                running[m + j] = <floating>(momentum * running[m + j]
                                            + (1 - momentum) * d * n / (n - 1))
    else:
        for j in range(m):
            mu[j] = running[j]
            rstd[j] = 1.0 / sqrt(<double>running[m + j] + eps)
    for i in range(n):
        for j in range(m):
            xhat[i * m + j] = <floating>((z_in[i * m + j] - mu[j]) * rstd[j])
        _scale_shift(xhat + i * m, m, gamma, beta, z_out + i * m)


cdef void batch_norm_backward_core(const floating* xhat, const double* stats, const floating* g,
                                   Py_ssize_t n, Py_ssize_t m, const floating* gamma,
                                   bint training, floating acc, floating* grad_gamma,
                                   floating* grad_beta, floating* g_prev) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const double* rstd = stats + m
    cdef double* sg = <double*>stats + 2 * m
    cdef double* sgx = <double*>stats + 3 * m
    # the two column sums in double, once: the gradients of gamma and beta, and (training)
    # the two means of the error signal
    for j in range(m):
        sg[j] = 0
        sgx[j] = 0
    for i in range(n):
        for j in range(m):
            sg[j] += g[i * m + j]
            sgx[j] += <double>g[i * m + j] * xhat[i * m + j]
    for j in range(m):
        if grad_gamma != NULL:
            grad_gamma[j] = <floating>((acc * grad_gamma[j] if acc != 0 else 0) + sgx[j])
        if grad_beta != NULL:
            grad_beta[j] = <floating>((acc * grad_beta[j] if acc != 0 else 0) + sg[j])
        sg[j] = sg[j] / n if training else 0
        sgx[j] = sgx[j] / n if training else 0
    if g_prev == NULL:
        return
    for i in range(n):
        if gamma != NULL:
            for j in range(m):
                g_prev[i * m + j] = <floating>(gamma[j] * rstd[j] * (
                    g[i * m + j] - sg[j] - xhat[i * m + j] * sgx[j]))
        else:
            for j in range(m):
                g_prev[i * m + j] = <floating>(rstd[j] * (
                    g[i * m + j] - sg[j] - xhat[i * m + j] * sgx[j]))


def batch_norm_forward(const floating[:, ::1] z_in,  # IN
                       const floating[::1] gamma, const floating[::1] beta,  # IN (None: absent)
                       double eps, bint training, double momentum,
                       floating[::1] running,  # IN/OUT (2 m: mean then var)
                       floating[:, ::1] xhat, double[::1] stats,  # OUT (the cache, stats 4 m)
                       floating[:, ::1] z_out,  # OUT
                       int n_threads):
    """Batch normalisation (see the header). Inputs are validated by the caller."""
    if z_in.shape[0] == 0:
        return
    with nogil:
        batch_norm_forward_core(&z_in[0, 0], z_in.shape[0], z_in.shape[1],
                                NULL if gamma is None else &gamma[0],
                                NULL if beta is None else &beta[0], eps, training, momentum,
                                &running[0], &xhat[0, 0], &stats[0], &z_out[0, 0])


def batch_norm_backward(const floating[:, ::1] xhat, double[::1] stats,  # IN (stats: scratch)
                        const floating[:, ::1] g, const floating[::1] gamma,  # IN
                        bint training, double acc,
                        floating[::1] grad_gamma, floating[::1] grad_beta,  # OUT (None: absent)
                        floating[:, ::1] g_prev,  # OUT (None: not needed)
                        int n_threads):
    """The backward pass of batch normalisation (see the header)."""
    if g.shape[0] == 0:
        return
    with nogil:
        batch_norm_backward_core(&xhat[0, 0], &stats[0], &g[0, 0], g.shape[0], g.shape[1],
                                 NULL if gamma is None else &gamma[0], training, <floating>acc,
                                 NULL if grad_gamma is None else &grad_gamma[0],
                                 NULL if grad_beta is None else &grad_beta[0],
                                 NULL if g_prev is None else &g_prev[0, 0])
