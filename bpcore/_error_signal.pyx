# The error signal delta = dL/dz_in, computed once per layer from the output backwards and cached:
#
#   output layer O   delta[O] = grad_{f_out} L * tau'(f_in),  grad_{f_out} L = w_i * scale * g:
#                      mse    g = 2 (f_out - y)
#                      mae    g = sign(f_out - y)                (0 at 0, as torch.sign)
#                      huber  g = clip(f_out - y, -1, 1)         (delta = 1)
#                    fused to   delta[O] = w_i * scale * (f_out - y)
#                    for softmax + cross-entropy, sigmoid + binary cross-entropy and
#                    exponential + poisson, where the derivative of the loss and of tau cancel
#                    (no division by f_out (1 - f_out) or f_out); and from the logits, with an
#                    identity output (Keras' from_logits=True):
#                      cross-entropy         delta[O] = w_i * scale * (softmax(f_in) - y)
#                      binary cross-entropy  delta[O] = w_i * scale * (sigmoid(f_in) - y)
#   hidden layer i   delta[i] = (delta[i+1] @ W[i+1].T) * sigma'(z_in[i])
#
# The hidden recursion is one gemm (delta_next @ W_next.T, the transpose read in place by BLAS),
# then a sweep over the rows that multiplies sigma' in while the freshly written row is in cache.
# sigma' comes from the cached z_out, or from z_in for the activations whose header line in
# _activations.pxd says so (gelu, silu, softplus, mish, hard_sigmoid). Rows are independent, so
# both sweeps are parallel over rows (prange).
#
# scale is the caller's reduction: 1/N for the mean over samples (cross-entropy), 1/(N m) for the
# mean over all elements (mse, binary cross-entropy). For gradient accumulation over micro-batches
# the caller passes the scale of the whole batch, so the accumulated gradient is the full one.

from cython.parallel cimport prange

from bpcore._activations cimport (EXPONENTIAL, IDENTITY, SIGMOID, SOFTMAX, backprop_row, sigmoid,
                                  sigma_prime_cost, softmax_rows)
from bpcore._blas cimport gemm, threads_after_gemm
from bpcore._loss cimport BINARY_CROSS_ENTROPY, CROSS_ENTROPY, MAE, HUBER, POISSON
from bpcore._openmp cimport COST_STREAM, work_threads


# How delta[O] is formed for a (loss, tau) pair
cdef enum:
    THROUGH_TAU = 0     # grad_{f_out} L, then through tau's Jacobian
    FUSED = 1           # s (f_out - y)
    SOFTMAX_LOGITS = 2  # s (softmax(f_in) - y)
    SIGMOID_LOGITS = 3  # s (sigmoid(f_in) - y)


cdef inline int _delta_form(int loss, int tau) noexcept nogil:
    if ((loss == CROSS_ENTROPY and tau == SOFTMAX)
            or (loss == BINARY_CROSS_ENTROPY and tau == SIGMOID)
            or (loss == POISSON and tau == EXPONENTIAL)):
        return FUSED
    if loss == CROSS_ENTROPY and tau == IDENTITY:
        return SOFTMAX_LOGITS
    if loss == BINARY_CROSS_ENTROPY and tau == IDENTITY:
        return SIGMOID_LOGITS
    return THROUGH_TAU


cdef inline void _output_row(const floating* f_in, const floating* f_out, const floating* y,
                             floating s, Py_ssize_t m, int form, int loss, int tau,
                             floating alpha, floating* delta) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating d
    if form == FUSED:
        for j in range(m):
            delta[j] = s * (f_out[j] - y[j])
    elif form == SOFTMAX_LOGITS:
        softmax_rows(<const floating*>NULL, <floating*>f_in, delta, 1, m)
        for j in range(m):
            delta[j] = s * (delta[j] - y[j])
    elif form == SIGMOID_LOGITS:
        for j in range(m):
            delta[j] = s * (sigmoid(f_in[j]) - y[j])
    else:
        if loss == MAE:
            for j in range(m):
                d = f_out[j] - y[j]
                delta[j] = s if d > 0 else (-s if d < 0 else 0)
        elif loss == HUBER:
            for j in range(m):
                d = f_out[j] - y[j]
                delta[j] = s * (1 if d > 1 else (-1 if d < -1 else d))
        else:  # mse
            for j in range(m):
                delta[j] = 2 * s * (f_out[j] - y[j])
        backprop_row(tau, alpha, f_in, f_out, delta, m)


cdef void output_delta_core(const floating* f_in, const floating* f_out, const floating* y,
                            const floating* sample_weight, Py_ssize_t n, Py_ssize_t m,
                            int loss, int tau, floating alpha, floating scale,
                            floating* delta, int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int form = _delta_form(loss, tau)
    cdef int nt = work_threads(n * m * max(<Py_ssize_t>COST_STREAM, sigma_prime_cost(tau)), n,
                               n_threads)
    if nt == 1:
        for i in range(n):
            _output_row(f_in + i * m, f_out + i * m, y + i * m,
                        scale * (sample_weight[i] if sample_weight != NULL else 1),
                        m, form, loss, tau, alpha, delta + i * m)
    else:
        for i in prange(n, num_threads=nt, schedule="static"):
            _output_row(f_in + i * m, f_out + i * m, y + i * m,
                        scale * (sample_weight[i] if sample_weight != NULL else 1),
                        m, form, loss, tau, alpha, delta + i * m)


cdef void hidden_delta_core(const floating* delta_next, Py_ssize_t n, Py_ssize_t m_next,
                            const floating* W_next, const floating* z_in, const floating* z_out,
                            Py_ssize_t m, int act, floating alpha,
                            floating* delta, int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nt
    if n == 0 or m == 0:
        return
    # delta (n, m) = delta_next (n, m_next) @ W_next.T   (W_next is (m, m_next), row-major)
    gemm(False, True, n, m, m_next, <floating>1, delta_next, m_next, W_next, m_next,
         <floating>0, delta, m)
    nt = work_threads(n * m * sigma_prime_cost(act), n,
                      threads_after_gemm(n, m, m_next, n_threads))
    if nt == 1:
        for i in range(n):
            backprop_row(act, alpha, NULL if z_in == NULL else z_in + i * m, z_out + i * m,
                         delta + i * m, m)
    else:
        for i in prange(n, num_threads=nt, schedule="static"):
            backprop_row(act, alpha, NULL if z_in == NULL else z_in + i * m, z_out + i * m,
                         delta + i * m, m)


def output_delta(const floating[:, ::1] f_in, const floating[:, ::1] f_out,  # IN
                 const floating[:, ::1] y, const floating[::1] sample_weight,  # IN (weights: None)
                 int loss, int tau, double alpha, double scale,
                 floating[:, ::1] delta,  # OUT
                 int n_threads):
    """delta[O] = dL/df_in for the output layer. Inputs are validated by the caller (bp.kernels)."""
    cdef Py_ssize_t n = f_out.shape[0]
    cdef const floating* w = NULL if sample_weight is None else &sample_weight[0]
    if n == 0:
        return
    with nogil:
        output_delta_core(&f_in[0, 0], &f_out[0, 0], &y[0, 0], w, n, f_out.shape[1], loss, tau,
                          <floating>alpha, <floating>scale, &delta[0, 0], n_threads)


def hidden_delta(const floating[:, ::1] delta_next, const floating[:, ::1] W_next,  # IN
                 const floating[:, ::1] z_in, const floating[:, ::1] z_out,  # IN (z_in: None ok
                 int activation, double alpha,  # unless sigma' reads it: _activations.pxd)
                 floating[:, ::1] delta,  # OUT
                 int n_threads):
    """delta = (delta_next @ W_next.T) * sigma'(z_in). Inputs are validated by the caller."""
    cdef Py_ssize_t n = delta_next.shape[0]
    cdef const floating* zi = NULL if z_in is None else &z_in[0, 0]
    if n == 0:
        return
    with nogil:
        hidden_delta_core(&delta_next[0, 0], n, delta_next.shape[1], &W_next[0, 0], zi,
                          &z_out[0, 0], z_out.shape[1], activation, <floating>alpha,
                          &delta[0, 0], n_threads)
