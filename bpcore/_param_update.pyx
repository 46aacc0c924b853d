# Fused parameter updates: one elementwise sweep per optimizer step over the flat parameter vector,
# reading the gradient once and writing the parameter and the optimizer state once.
#
# bp keeps all of a model's parameters in one flat buffer (each layer's W and b are views into it),
# and its gradients and optimizer state in buffers of the same layout. So one call updates the
# whole model, gradient clipping is one sum of squares, and a data-parallel step would sum one
# buffer across ranks. grad_scale multiplies the gradient as it is read: that is how global-norm
# clipping is applied without another pass.
#
# The rules are PyTorch's (torch.optim), so the numbers can be compared directly:
#   SGD    g = s grad + wd p;  v = mu v + g;  p -= lr (g + mu v if nesterov else v)
#          (momentum without dampening: the "PyTorch" form v = mu v + g, p -= lr v, not
#          Sutskever's v = mu v - lr g; they agree for a constant learning rate)
#   Adam   g = s grad + wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
#          p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
#   AdamW  the same with g = s grad and, first, p *= 1 - lr wd (decoupled weight decay)
#   RMSprop g = s grad + wd p;  a = rho a + (1 - rho) g^2;  (centered: c = rho c + (1 - rho) g,
#          a - c^2 in place of a);  r = g / (sqrt(a) + eps);  momentum: u = mu u + r, p -= lr u;
#          else p -= lr r
#   Adagrad g = s grad + wd p;  a += g^2;  p -= lr g / (sqrt(a) + eps)
#   Nadam  g = s grad + wd p;  m, v as Adam;  d = sqrt(v / (1 - b2^t)) + eps;
#          p -= c_g g / d + c_m m / d, with mu_t = b1 (1 - 0.96^(t psi) / 2) and
#          c_g = lr (1 - mu_t) / (1 - prod_{k<=t} mu_k),
#          c_m = lr mu_{t+1} / (1 - prod_{k<=t+1} mu_k)
#          (Dozat's momentum schedule, psi = momentum_decay; the caller keeps the product)
# Parallel over elements with prange (each element is independent, so the result does not depend
# on the thread count). sum_of_squares sums fixed chunks in a fixed order: also thread-independent.

from cython.parallel cimport prange

from bpcore._activations cimport f_sqrt
from bpcore._openmp cimport COST_STREAM, work_threads


cdef inline void _sgd_range(const floating* grad, Py_ssize_t lo, Py_ssize_t hi, floating lr,
                            floating momentum, bint nesterov, floating weight_decay,
                            floating grad_scale, floating* param,
                            floating* velocity) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, v
    for i in range(lo, hi):
        g = grad_scale * grad[i] + weight_decay * param[i]
        if momentum != 0:
            v = momentum * velocity[i] + g
            velocity[i] = v
            g = g + momentum * v if nesterov else v
        param[i] = param[i] - lr * g


cdef void sgd_core(const floating* grad, Py_ssize_t n, floating lr, floating momentum,
                   bint nesterov, floating weight_decay, floating grad_scale,
                   floating* param, floating* velocity, int n_threads) noexcept nogil:
    cdef Py_ssize_t c, size
    cdef int nt = work_threads(n * COST_STREAM, n, n_threads)
    if nt == 1:  # no OpenMP region (measured: see bench/README.md, Python call costs)
        _sgd_range(grad, 0, n, lr, momentum, nesterov, weight_decay, grad_scale, param, velocity)
        return
    size = (n + nt - 1) // nt  # one contiguous range per thread, each a vectorised loop
    for c in prange(nt, num_threads=nt, schedule="static"):
        _sgd_range(grad, c * size, min(n, (c + 1) * size), lr, momentum, nesterov, weight_decay,
                   grad_scale, param, velocity)


cdef inline void _adam_range(const floating* grad, Py_ssize_t lo, Py_ssize_t hi, floating beta1,
                             floating beta2, floating c1, floating c2, floating eps,
                             floating decay, floating l2, floating step_size,
                             floating inv_sqrt_bias2, floating grad_scale, floating* param,
                             floating* m, floating* v) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, p
    for i in range(lo, hi):
        p = param[i] * decay
        g = grad_scale * grad[i] + l2 * p
        m[i] = beta1 * m[i] + c1 * g
        v[i] = beta2 * v[i] + c2 * g * g
        param[i] = p - step_size * m[i] / (f_sqrt(v[i]) * inv_sqrt_bias2 + eps)


cdef void adam_core(const floating* grad, Py_ssize_t n, floating lr, floating beta1,
                    floating beta2, floating eps, floating weight_decay, bint decoupled,
                    long step, floating grad_scale, floating* param, floating* m, floating* v,
                    int n_threads) noexcept nogil:
    cdef Py_ssize_t c, size
    cdef double bias1 = 1 - (<double>beta1) ** step
    cdef double bias2 = 1 - (<double>beta2) ** step
    cdef floating step_size = <floating>(lr / bias1)
    cdef floating inv_sqrt_bias2 = <floating>(1 / (bias2 ** 0.5))
    cdef floating decay = <floating>(1 - lr * weight_decay) if decoupled else 1
    cdef floating l2 = 0 if decoupled else weight_decay
    # in the dtype, outside the loop: `1 - beta1` inside it is computed in double, and the float
    # loop then converts every element to double and back
    cdef floating c1 = 1 - beta1, c2 = 1 - beta2
    cdef int nt = work_threads(n * COST_STREAM, n, n_threads)
    if nt == 1:
        _adam_range(grad, 0, n, beta1, beta2, c1, c2, eps, decay, l2, step_size, inv_sqrt_bias2,
                    grad_scale, param, m, v)
        return
    size = (n + nt - 1) // nt
    for c in prange(nt, num_threads=nt, schedule="static"):
        _adam_range(grad, c * size, min(n, (c + 1) * size), beta1, beta2, c1, c2, eps, decay, l2,
                    step_size, inv_sqrt_bias2, grad_scale, param, m, v)


cdef inline void _rmsprop_range(const floating* grad, Py_ssize_t lo, Py_ssize_t hi, floating lr,
                                floating rho, floating c, floating eps, floating weight_decay,
                                floating momentum, floating grad_scale, floating* param,
                                floating* sq, floating* gavg, floating* buf) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, a, r
    for i in range(lo, hi):
        g = grad_scale * grad[i] + weight_decay * param[i]
        a = rho * sq[i] + c * g * g
        sq[i] = a
        if gavg != NULL:
            gavg[i] = rho * gavg[i] + c * g
            a = a - gavg[i] * gavg[i]
        r = g / (f_sqrt(a) + eps)
        if buf != NULL:
            r = momentum * buf[i] + r
            buf[i] = r
        param[i] = param[i] - lr * r


cdef void rmsprop_core(const floating* grad, Py_ssize_t n, floating lr, floating rho,
                       floating eps, floating weight_decay, floating momentum,
                       floating grad_scale, floating* param, floating* sq, floating* gavg,
                       floating* buf, int n_threads) noexcept nogil:
    """gavg NULL: not centered; buf NULL: no momentum."""
    cdef Py_ssize_t c, size
    cdef floating c1 = 1 - rho
    cdef int nt = work_threads(n * COST_STREAM, n, n_threads)
    if nt == 1:
        _rmsprop_range(grad, 0, n, lr, rho, c1, eps, weight_decay, momentum, grad_scale, param,
                       sq, gavg, buf)
        return
    size = (n + nt - 1) // nt
    for c in prange(nt, num_threads=nt, schedule="static"):
        _rmsprop_range(grad, c * size, min(n, (c + 1) * size), lr, rho, c1, eps, weight_decay,
                       momentum, grad_scale, param, sq, gavg, buf)


cdef inline void _adagrad_range(const floating* grad, Py_ssize_t lo, Py_ssize_t hi, floating lr,
                                floating eps, floating weight_decay, floating grad_scale,
                                floating* param, floating* acc) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g
    for i in range(lo, hi):
        g = grad_scale * grad[i] + weight_decay * param[i]
        acc[i] = acc[i] + g * g
        param[i] = param[i] - lr * g / (f_sqrt(acc[i]) + eps)


cdef void adagrad_core(const floating* grad, Py_ssize_t n, floating lr, floating eps,
                       floating weight_decay, floating grad_scale, floating* param,
                       floating* acc, int n_threads) noexcept nogil:
    cdef Py_ssize_t c, size
    cdef int nt = work_threads(n * COST_STREAM, n, n_threads)
    if nt == 1:
        _adagrad_range(grad, 0, n, lr, eps, weight_decay, grad_scale, param, acc)
        return
    size = (n + nt - 1) // nt
    for c in prange(nt, num_threads=nt, schedule="static"):
        _adagrad_range(grad, c * size, min(n, (c + 1) * size), lr, eps, weight_decay,
                       grad_scale, param, acc)


cdef inline void _nadam_range(const floating* grad, Py_ssize_t lo, Py_ssize_t hi, floating beta1,
                              floating beta2, floating c1, floating c2, floating eps,
                              floating weight_decay, floating c_grad, floating c_m,
                              floating inv_sqrt_bias2, floating grad_scale, floating* param,
                              floating* m, floating* v) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, d
    for i in range(lo, hi):
        g = grad_scale * grad[i] + weight_decay * param[i]
        m[i] = beta1 * m[i] + c1 * g
        v[i] = beta2 * v[i] + c2 * g * g
        d = f_sqrt(v[i]) * inv_sqrt_bias2 + eps
        param[i] = param[i] - c_grad * g / d - c_m * m[i] / d


cdef void nadam_core(const floating* grad, Py_ssize_t n, floating beta1, floating beta2,
                     floating eps, floating weight_decay, double c_grad, double c_m, long step,
                     floating grad_scale, floating* param, floating* m, floating* v,
                     int n_threads) noexcept nogil:
    cdef Py_ssize_t c, size
    cdef floating inv_sqrt_bias2 = <floating>(1 / ((1 - (<double>beta2) ** step) ** 0.5))
    cdef floating c1 = 1 - beta1, c2 = 1 - beta2
    cdef int nt = work_threads(n * COST_STREAM, n, n_threads)
    if nt == 1:
        _nadam_range(grad, 0, n, beta1, beta2, c1, c2, eps, weight_decay, <floating>c_grad,
                     <floating>c_m, inv_sqrt_bias2, grad_scale, param, m, v)
        return
    size = (n + nt - 1) // nt
    for c in prange(nt, num_threads=nt, schedule="static"):
        _nadam_range(grad, c * size, min(n, (c + 1) * size), beta1, beta2, c1, c2, eps,
                     weight_decay, <floating>c_grad, <floating>c_m, inv_sqrt_bias2, grad_scale,
                     param, m, v)


cdef extern from *:
    """
    #define BP_SUMSQ_CHUNKS 64
    /* The body of _chunk_sum_of_squares: acc[k] += x[i + k]^2 for i = lo, lo + 8, ... while
       i + 8 <= hi; returns the i it stopped at. With GCC or Clang the eight sums are four pairs
       of doubles (vector extensions): each lane does what a scalar sum does, in the same order,
       so the bits are the same; GCC 12 left the scalar loop unvectorised (one element a cycle;
       measured: see bench/README.md, Loops written to vectorise). */
    #if defined(__GNUC__) || defined(__clang__)
    typedef double bp_v2d __attribute__((vector_size(16)));
    #define BP_SUMSQ8(T)                                                                        \
    static inline Py_ssize_t bp_sumsq8_##T(const T* x, Py_ssize_t i, Py_ssize_t hi,            \
                                           double* acc) {                                      \
        bp_v2d a0 = {0, 0}, a1 = {0, 0}, a2 = {0, 0}, a3 = {0, 0}, t;                           \
        for (; i + 8 <= hi; i += 8) {                                                           \
            t = (bp_v2d){x[i], x[i + 1]}; a0 += t * t;                                          \
            t = (bp_v2d){x[i + 2], x[i + 3]}; a1 += t * t;                                      \
            t = (bp_v2d){x[i + 4], x[i + 5]}; a2 += t * t;                                      \
            t = (bp_v2d){x[i + 6], x[i + 7]}; a3 += t * t;                                      \
        }                                                                                       \
        acc[0] = a0[0]; acc[1] = a0[1]; acc[2] = a1[0]; acc[3] = a1[1];                         \
        acc[4] = a2[0]; acc[5] = a2[1]; acc[6] = a3[0]; acc[7] = a3[1];                         \
        return i;                                                                               \
    }
    /* The same for two arrays in one loop (x and y each into its own eight sums, each sum
       getting the additions it gets alone): twice the independent additions in flight. */
    #define BP_SUMSQ8X2(T)                                                                      \
    static inline Py_ssize_t bp_sumsq8x2_##T(const T* x, const T* y, Py_ssize_t i,             \
                                             Py_ssize_t hi, double* ax, double* ay) {          \
        bp_v2d a0 = {0, 0}, a1 = {0, 0}, a2 = {0, 0}, a3 = {0, 0}, t;                           \
        bp_v2d b0 = {0, 0}, b1 = {0, 0}, b2 = {0, 0}, b3 = {0, 0}, u;                           \
        for (; i + 8 <= hi; i += 8) {                                                           \
            t = (bp_v2d){x[i], x[i + 1]}; a0 += t * t;                                          \
            u = (bp_v2d){y[i], y[i + 1]}; b0 += u * u;                                          \
            t = (bp_v2d){x[i + 2], x[i + 3]}; a1 += t * t;                                      \
            u = (bp_v2d){y[i + 2], y[i + 3]}; b1 += u * u;                                      \
            t = (bp_v2d){x[i + 4], x[i + 5]}; a2 += t * t;                                      \
            u = (bp_v2d){y[i + 4], y[i + 5]}; b2 += u * u;                                      \
            t = (bp_v2d){x[i + 6], x[i + 7]}; a3 += t * t;                                      \
            u = (bp_v2d){y[i + 6], y[i + 7]}; b3 += u * u;                                      \
        }                                                                                       \
        ax[0] = a0[0]; ax[1] = a0[1]; ax[2] = a1[0]; ax[3] = a1[1];                             \
        ax[4] = a2[0]; ax[5] = a2[1]; ax[6] = a3[0]; ax[7] = a3[1];                             \
        ay[0] = b0[0]; ay[1] = b0[1]; ay[2] = b1[0]; ay[3] = b1[1];                             \
        ay[4] = b2[0]; ay[5] = b2[1]; ay[6] = b3[0]; ay[7] = b3[1];                             \
        return i;                                                                               \
    }
    #else
    #define BP_SUMSQ8(T)                                                                        \
    static inline Py_ssize_t bp_sumsq8_##T(const T* x, Py_ssize_t i, Py_ssize_t hi,            \
                                           double* acc) {                                      \
        int k;                                                                                  \
        for (k = 0; k < 8; k++) acc[k] = 0;                                                     \
        for (; i + 8 <= hi; i += 8)                                                             \
            for (k = 0; k < 8; k++) acc[k] = acc[k] + (double)x[i + k] * x[i + k];              \
        return i;                                                                               \
    }
    #define BP_SUMSQ8X2(T)                                                                      \
    static inline Py_ssize_t bp_sumsq8x2_##T(const T* x, const T* y, Py_ssize_t i,             \
                                             Py_ssize_t hi, double* ax, double* ay) {          \
        bp_sumsq8_##T(y, i, hi, ay);                                                            \
        return bp_sumsq8_##T(x, i, hi, ax);                                                     \
    }
    #endif
    BP_SUMSQ8(float)
    BP_SUMSQ8(double)
    BP_SUMSQ8X2(float)
    BP_SUMSQ8X2(double)
    """
    Py_ssize_t SUMSQ_CHUNKS "BP_SUMSQ_CHUNKS"
    Py_ssize_t sumsq8_float "bp_sumsq8_float"(const float* x, Py_ssize_t i, Py_ssize_t hi,
                                              double* acc) noexcept nogil
    Py_ssize_t sumsq8_double "bp_sumsq8_double"(const double* x, Py_ssize_t i, Py_ssize_t hi,
                                                double* acc) noexcept nogil
    Py_ssize_t sumsq8x2_float "bp_sumsq8x2_float"(const float* x, const float* y, Py_ssize_t i,
                                                  Py_ssize_t hi, double* ax,
                                                  double* ay) noexcept nogil
    Py_ssize_t sumsq8x2_double "bp_sumsq8x2_double"(const double* x, const double* y,
                                                    Py_ssize_t i, Py_ssize_t hi, double* ax,
                                                    double* ay) noexcept nogil


cdef inline double _chunk_sum_of_squares(const floating* x, Py_ssize_t lo,
                                         Py_ssize_t hi) noexcept nogil:
    # Eight running sums, element i into sum i % 8, then added in a fixed order: one sum would
    # chain every addition on the one before (4 cycles each, no reassociation without
    # -ffast-math); eight independent ones vectorise (as four pairs: see BP_SUMSQ8 above). fit's
    # divergence guard runs this twice a step over all the parameters: with one sum it was a
    # third of the mnist network's step.
    cdef double acc[8]
    cdef Py_ssize_t i
    if floating is float:
        i = sumsq8_float(x, lo, hi, acc)
    else:
        i = sumsq8_double(x, lo, hi, acc)
    while i < hi:
        acc[0] = acc[0] + (<double>x[i]) * x[i]
        i = i + 1
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef double sum_of_squares_core(const floating* x, Py_ssize_t n, int n_threads) noexcept nogil:
    # A fixed number of chunks, each summed in order into its own slot, then the slots in order:
    # no race, and the same bits for any thread count.
    cdef double partial[64]
    cdef double total = 0
    cdef Py_ssize_t c, lo, size = (n + SUMSQ_CHUNKS - 1) // SUMSQ_CHUNKS
    cdef int nt = work_threads(n * COST_STREAM, SUMSQ_CHUNKS, n_threads)
    if nt == 1:
        for c in range(SUMSQ_CHUNKS):
            lo = c * size
            partial[c] = _chunk_sum_of_squares(x, lo, min(n, lo + size))
    else:
        for c in prange(SUMSQ_CHUNKS, num_threads=nt, schedule="static"):
            lo = c * size
            partial[c] = _chunk_sum_of_squares(x, lo, min(n, lo + size))
    for c in range(SUMSQ_CHUNKS):
        total += partial[c]
    return total


def sgd_update(const floating[::1] grad,  # IN
               double learning_rate, double momentum, bint nesterov, double weight_decay,
               double grad_scale,
               floating[::1] param, floating[::1] velocity,  # OUT (velocity: None if momentum 0)
               int n_threads):
    """One SGD step on a flat parameter vector (PyTorch's rule, see the file header)."""
    cdef floating* vel = NULL if velocity is None else &velocity[0]
    if param.shape[0] == 0:
        return
    with nogil:
        sgd_core(&grad[0], param.shape[0], <floating>learning_rate, <floating>momentum,
                 nesterov, <floating>weight_decay, <floating>grad_scale, &param[0], vel,
                 n_threads)


def adam_update(const floating[::1] grad,  # IN
                double learning_rate, double beta1, double beta2, double eps,
                double weight_decay, bint decoupled, long step, double grad_scale,
                floating[::1] param, floating[::1] m, floating[::1] v,  # OUT
                int n_threads):
    """One Adam (decoupled=False) or AdamW (decoupled=True) step; `step` counts from 1."""
    if param.shape[0] == 0:
        return
    with nogil:
        adam_core(&grad[0], param.shape[0], <floating>learning_rate, <floating>beta1,
                  <floating>beta2, <floating>eps, <floating>weight_decay, decoupled, step,
                  <floating>grad_scale, &param[0], &m[0], &v[0], n_threads)


def rmsprop_update(const floating[::1] grad,  # IN
                   double learning_rate, double rho, double eps, double weight_decay,
                   double momentum, double grad_scale,
                   floating[::1] param, floating[::1] square_avg,  # OUT
                   floating[::1] grad_avg, floating[::1] momentum_buffer,  # OUT (None: not used)
                   int n_threads):
    """One RMSprop step (torch.optim.RMSprop's rule); grad_avg None: not centered,
    momentum_buffer None: no momentum."""
    cdef floating* gavg = NULL if grad_avg is None else &grad_avg[0]
    cdef floating* buf = NULL if momentum_buffer is None else &momentum_buffer[0]
    if param.shape[0] == 0:
        return
    with nogil:
        rmsprop_core(&grad[0], param.shape[0], <floating>learning_rate, <floating>rho,
                     <floating>eps, <floating>weight_decay, <floating>momentum,
                     <floating>grad_scale, &param[0], &square_avg[0], gavg, buf, n_threads)


def adagrad_update(const floating[::1] grad,  # IN
                   double learning_rate, double eps, double weight_decay, double grad_scale,
                   floating[::1] param, floating[::1] accumulator,  # OUT
                   int n_threads):
    """One Adagrad step (torch.optim.Adagrad's rule, lr_decay 0)."""
    if param.shape[0] == 0:
        return
    with nogil:
        adagrad_core(&grad[0], param.shape[0], <floating>learning_rate, <floating>eps,
                     <floating>weight_decay, <floating>grad_scale, &param[0], &accumulator[0],
                     n_threads)


def nadam_update(const floating[::1] grad,  # IN
                 double beta1, double beta2, double eps, double weight_decay, double c_grad,
                 double c_m, long step, double grad_scale,
                 floating[::1] param, floating[::1] m, floating[::1] v,  # OUT
                 int n_threads):
    """One Nadam step (torch.optim.NAdam's rule); c_grad and c_m are the step's two
    coefficients (the file header), `step` counts from 1."""
    if param.shape[0] == 0:
        return
    with nogil:
        nadam_core(&grad[0], param.shape[0], <floating>beta1, <floating>beta2, <floating>eps,
                   <floating>weight_decay, c_grad, c_m, step, <floating>grad_scale, &param[0],
                   &m[0], &v[0], n_threads)


cdef inline double _eight_sums(const double* acc) noexcept nogil:
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline void _chunk_sums_of_squares(const floating* x, const floating* y, Py_ssize_t lo,
                                        Py_ssize_t hi, double* sx, double* sy) noexcept nogil:
    # _chunk_sum_of_squares of x and of y, in one loop: each sum sees what it sees alone
    cdef double ax[8]
    cdef double ay[8]
    cdef Py_ssize_t i, j
    if floating is float:
        i = sumsq8x2_float(x, y, lo, hi, ax, ay)
    else:
        i = sumsq8x2_double(x, y, lo, hi, ax, ay)
    j = i
    while i < hi:
        ax[0] = ax[0] + (<double>x[i]) * x[i]
        i = i + 1
    while j < hi:
        ay[0] = ay[0] + (<double>y[j]) * y[j]
        j = j + 1
    sx[0] = _eight_sums(ax)
    sy[0] = _eight_sums(ay)


cdef void sums_of_squares_core(const floating* x, const floating* y, Py_ssize_t n,
                               double* sx, double* sy, int n_threads) noexcept nogil:
    """sum_of_squares_core(x) into sx and sum_of_squares_core(y) into sy, bit for bit, in one
    sweep over both (the guard's first step reads the parameters and the gradient together)."""
    cdef double px[64]
    cdef double py[64]
    cdef Py_ssize_t c, lo, size = (n + SUMSQ_CHUNKS - 1) // SUMSQ_CHUNKS
    cdef int nt = work_threads(2 * n * COST_STREAM, SUMSQ_CHUNKS, n_threads)
    if nt == 1:
        for c in range(SUMSQ_CHUNKS):
            lo = c * size
            _chunk_sums_of_squares(x, y, lo, min(n, lo + size), &px[c], &py[c])
    else:
        for c in prange(SUMSQ_CHUNKS, num_threads=nt, schedule="static"):
            lo = c * size
            _chunk_sums_of_squares(x, y, lo, min(n, lo + size), &px[c], &py[c])
    sx[0] = 0
    sy[0] = 0
    for c in range(SUMSQ_CHUNKS):
        sx[0] += px[c]
        sy[0] += py[c]


def sums_of_squares(const floating[::1] x, const floating[::1] y, int n_threads):
    """(sum_i x_i^2, sum_i y_i^2) in one sweep, each what sum_of_squares gives."""
    cdef double sx = 0, sy = 0
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y must have one length. Received: {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] == 0:
        return 0.0, 0.0
    with nogil:
        sums_of_squares_core(&x[0], &y[0], x.shape[0], &sx, &sy, n_threads)
    return sx, sy


def sum_of_squares(const floating[::1] x, int n_threads):
    """sum_i x_i^2 in double, deterministic for any thread count (for global-norm clipping)."""
    cdef double total
    if x.shape[0] == 0:
        return 0.0
    with nogil:
        total = sum_of_squares_core(&x[0], x.shape[0], n_threads)
    return total


# ---- scikit-learn's MLP updates (bp.sklearn) -------------------------------------------------
# sklearn/neural_network/_stochastic_optimizers.py, element by element, so that bp.sklearn's
# trajectories equal scikit-learn's to rounding:
#   L2 penalty  g = grad + l2 p on the weights (l2 = alpha / n_batch), g = grad on the biases
#   SGD         v = mu v - lr g;  p += (mu v - lr g) if nesterov else v
#   Adam        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p += -lr_t m / (sqrt(v) + eps)
#               (lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), computed by the caller)
# The flat vector is cut into segments at `bounds` (0 = bounds[0] < ... < bounds[k] = n): even
# segments are weights, odd ones biases (bp's layout W0, b0, W1, b1, ...). The update returns
# sum p^2 over the weights before the step: the penalty's 0.5 alpha ||W||^2 / n_batch in the loss.

cdef inline double _sklearn_range(int kind, const floating* grad, Py_ssize_t lo, Py_ssize_t hi,
                                  floating l2, floating lr, floating momentum, bint nesterov,
                                  floating beta1, floating beta2, floating eps, floating* param,
                                  floating* s1, floating* s2) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, p, v
    cdef floating c1 = 1 - beta1, c2 = 1 - beta2
    cdef double sumsq = 0
    for i in range(lo, hi):
        p = param[i]
        sumsq += (<double>p) * p
        g = grad[i] + l2 * p
        if kind == SKLEARN_SGD:
            v = momentum * s1[i] - lr * g
            s1[i] = v
            param[i] = p + ((momentum * v - lr * g) if nesterov else v)
        else:
            s1[i] = beta1 * s1[i] + c1 * g
            s2[i] = beta2 * s2[i] + c2 * (g * g)
            param[i] = p + (-lr * s1[i]) / (f_sqrt(s2[i]) + eps)
    return sumsq


cdef double sklearn_update_core(int kind, const floating* grad, const Py_ssize_t* bounds,
                                Py_ssize_t n_bounds, floating l2, floating lr,
                                floating momentum, bint nesterov, floating beta1,
                                floating beta2, floating eps, floating* param, floating* s1,
                                floating* s2, int n_threads) noexcept nogil:
    cdef double partial[64]
    cdef double weights_sumsq = 0, part
    cdef Py_ssize_t j, c, lo, hi, size
    cdef floating seg_l2
    cdef int nt
    for j in range(n_bounds - 1):
        lo = bounds[j]
        hi = bounds[j + 1]
        seg_l2 = l2 if j % 2 == 0 else 0
        nt = min(64, work_threads((hi - lo) * COST_STREAM, hi - lo, n_threads))
        if nt == 1:
            part = _sklearn_range(kind, grad, lo, hi, seg_l2, lr, momentum, nesterov, beta1,
                                  beta2, eps, param, s1, s2)
        else:
            size = (hi - lo + nt - 1) // nt
            for c in prange(nt, num_threads=nt, schedule="static"):
                partial[c] = _sklearn_range(kind, grad, lo + c * size, min(hi, lo + (c + 1) * size),
                                            seg_l2, lr, momentum, nesterov, beta1, beta2, eps,
                                            param, s1, s2)
            part = 0
            for c in range(nt):
                part += partial[c]
        if j % 2 == 0:
            weights_sumsq += part
    return weights_sumsq


def sklearn_update(const floating[::1] grad,  # IN
                   const Py_ssize_t[::1] bounds, str kind, double l2, double learning_rate,
                   double momentum, bint nesterov, double beta1, double beta2, double eps,
                   floating[::1] param, floating[::1] state1, floating[::1] state2,  # OUT
                   int n_threads):
    """One step of scikit-learn's MLP SGD (state1 = velocity) or Adam (state1 = m, state2 = v;
    learning_rate = lr_t) with the L2 penalty on the weight segments; returns sum W^2 before it."""
    cdef int code = SKLEARN_SGD if kind == "sgd" else SKLEARN_ADAM
    cdef floating* s2 = NULL if state2 is None else &state2[0]
    cdef double sumsq
    if param.shape[0] == 0:
        return 0.0
    with nogil:
        sumsq = sklearn_update_core(code, &grad[0], &bounds[0], bounds.shape[0], <floating>l2,
                                    <floating>learning_rate, <floating>momentum, nesterov,
                                    <floating>beta1, <floating>beta2, <floating>eps, &param[0],
                                    &state1[0], s2, n_threads)
    return sumsq
