# Loss values L for a batch, per sample and reduced.
#
#   mse                   l_i = sum_j (f_out_ij - y_ij)^2
#   binary_cross_entropy  l_i = sum_j [max(x, 0) - x y + log(1 + e^-|x|)],  x = f_in_ij (sigmoid)
#   cross_entropy         l_i = sum_j y_ij (logsumexp(f_in_i) - f_in_ij)               (softmax)
#   mae                   l_i = sum_j |f_out_ij - y_ij|
#   huber                 l_i = sum_j h(f_out_ij - y_ij),  h(d) = d^2 / 2 if |d| <= 1
#                                                           else |d| - 1/2   (delta = 1)
#   poisson               l_i = sum_j (f_out_ij - y_ij f_in_ij)
#                         (exponential: f_out = e^f_in)
# The cross-entropies are computed from the logits f_in, not from log(f_out): that is exact where
# f_out has rounded to 0 or 1 (PyTorch's BCELoss instead clamps log at -100). So they need no
# change when the output is the identity (the logits themselves, Keras' from_logits=True).
# poisson is PyTorch's PoissonNLLLoss(log_input=True): the negative log-likelihood of y under a
# Poisson law of mean f_out = e^f_in, without the constant log(y!); scikit-learn's half Poisson
# deviance (MLPRegressor(loss="poisson")) is the same up to the constant y log y - y, so both
# have the same gradient. huber is torch.nn.HuberLoss() (= SmoothL1Loss() for delta = 1) and
# Keras' Huber() defaults.
# Reduction: L = scale * sum_i w_i l_i, w_i the sample weights (1 if none), scale chosen by the
# caller: 1/N for cross-entropy and 1/(N m) for mse and binary cross-entropy give PyTorch's mean.
# It is the same scale that _error_signal.pyx puts into delta[O] = dL/df_in, which is why every l_i
# sums over the outputs: with a mean over them the loss would be m times smaller than the loss
# whose gradient delta[O] is. The sum runs in row order in double, so it is the same for any
# thread count. Parallelised over rows (prange) when the batch is large enough.

from cython.parallel cimport prange
from libc.math cimport fabs
from libc.stdint cimport int64_t
from libc.string cimport memset

from bpcore._activations cimport f_abs, f_exp, f_log, f_log1p
from bpcore._openmp cimport COST_STREAM, COST_TRANSCENDENTAL, work_threads


cdef inline floating _row_loss(const floating* f_in, const floating* f_out, const floating* y,
                               Py_ssize_t m, int loss) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating acc = 0, d, x, mx, lse, ysum
    if loss == MSE:
        for j in range(m):
            d = f_out[j] - y[j]
            acc = acc + d * d
        return acc
    if loss == BINARY_CROSS_ENTROPY:
        for j in range(m):
            x = f_in[j]
            acc = acc + (x if x > 0 else 0) - x * y[j] + f_log1p(f_exp(-fabs(x)))
        return acc
    if loss == MAE:
        for j in range(m):
            acc = acc + f_abs(f_out[j] - y[j])
        return acc
    if loss == HUBER:
        for j in range(m):
            d = f_abs(f_out[j] - y[j])
            acc = acc + (d * d / 2 if d <= 1 else d - <floating>0.5)
        return acc
    if loss == POISSON:
        for j in range(m):
            acc = acc + f_out[j] - y[j] * f_in[j]
        return acc
    # cross-entropy: sum_j y_j (lse - x_j) = lse * sum(y) - <y, x>
    if m == 0:
        return 0  # the empty sum; f_in[0] below would read past the row
    mx = f_in[0]
    for j in range(1, m):
        if f_in[j] > mx:
            mx = f_in[j]
    lse = 0
    ysum = 0
    for j in range(m):
        lse = lse + f_exp(f_in[j] - mx)
        ysum = ysum + y[j]
        acc = acc + y[j] * f_in[j]
    lse = mx + f_log(lse)
    return lse * ysum - acc


cdef double loss_core(const floating* f_in, const floating* f_out, const floating* y,
                      const floating* sample_weight, Py_ssize_t n, Py_ssize_t m,
                      int loss, double scale, floating* per_sample,
                      int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef double total = 0
    cdef bint cheap = loss == MSE or loss == MAE or loss == HUBER or loss == POISSON
    cdef int nt = work_threads(n * m * (COST_STREAM if cheap else COST_TRANSCENDENTAL), n,
                               n_threads)
    if nt == 1:
        for i in range(n):
            per_sample[i] = _row_loss(f_in + i * m, f_out + i * m, y + i * m, m, loss)
    else:
        for i in prange(n, num_threads=nt, schedule="static"):
            per_sample[i] = _row_loss(f_in + i * m, f_out + i * m, y + i * m, m, loss)
    for i in range(n):
        total += per_sample[i] * (sample_weight[i] if sample_weight != NULL else 1)
    return total * scale


def loss_value(const floating[:, ::1] f_in, const floating[:, ::1] f_out,  # IN
               const floating[:, ::1] y, const floating[::1] sample_weight,  # IN (weights: None)
               int loss, double scale,
               floating[::1] per_sample,  # OUT
               int n_threads):
    """Per-sample losses into `per_sample` and return scale * sum_i w_i l_i.
    Inputs pre-validated."""
    cdef Py_ssize_t n = f_out.shape[0], m = f_out.shape[1]
    cdef const floating* w = NULL if sample_weight is None else &sample_weight[0]
    cdef double total
    if n == 0:
        return 0.0
    with nogil:
        total = loss_core(&f_in[0, 0], &f_out[0, 0], &y[0, 0], w, n, m, loss, scale,
                          &per_sample[0], n_threads)
    return total


def one_hot(const int64_t[::1] labels,  # IN
            floating[:, ::1] Y):  # OUT
    """Y[i, j] = 1 if j == labels[i] else 0: the cross-entropy targets of class labels in
    [0, m), m = Y.shape[1]. Returns the index of the first label outside [0, m), else -1 (Y is
    then partly written: the caller discards it and lets bp.losses name the label)."""
    cdef Py_ssize_t i, n = labels.shape[0], m = Y.shape[1], bad = -1
    cdef int64_t label
    if n == 0:
        return bad
    with nogil:
        memset(&Y[0, 0], 0, n * m * sizeof(floating))
        for i in range(n):
            label = labels[i]
            if label < 0 or label >= m:
                bad = i
                break
            Y[i, label] = 1
    return bad


# scikit-learn's log loss (bp.sklearn's compiled epoch): -sum_i w_i sum_j xlogy(y, p) / sum(w)
# (+ xlogy(1 - y, 1 - p) for binary cross-entropy) with p clipped to [eps, 1 - eps].
cdef double clipped_log_loss_core(const floating* f_out, const floating* Y, const floating* w,
                                  Py_ssize_t n, Py_ssize_t m, int loss, double sw,
                                  double value) noexcept nogil:
    """scikit-learn's log loss clips the probabilities to [eps, 1 - eps]: `value` (exact, from
    the logits) unless an output has saturated, then its formula (bp._sklearn_net's twin)."""
    cdef Py_ssize_t i, j
    cdef double eps = 1.1920928955078125e-07 if floating is float else 2.220446049250313e-16
    cdef double p, y, total = 0, row
    cdef bint saturated = False
    for i in range(n * m):
        if f_out[i] < eps or f_out[i] > 1 - eps:
            saturated = True
            break
    if not saturated:
        return value
    for i in range(n):
        row = 0
        for j in range(m):
            p = min(max(<double>f_out[i * m + j], eps), 1 - eps)
            y = Y[i * m + j]
            if y != 0:
                row += y * f_log(p)
            if loss == BINARY_CROSS_ENTROPY and y != 1:
                row += (1 - y) * f_log(1 - p)
        total -= row * (w[i] if w != NULL else 1)
    return total / sw
