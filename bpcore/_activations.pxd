# The activations sigma, each written beside its derivative sigma'.
#
# Which derivative needs what (this decides what the forward pass must cache):
#   identity    sigma(z) = z                          sigma' = 1                     (nothing)
#   sigmoid     sigma(z) = 1 / (1 + e^-z)             sigma' = z_out (1 - z_out)     (z_out)
#   tanh        sigma(z) = tanh z                     sigma' = 1 - z_out^2           (z_out)
#   relu        sigma(z) = max(z, 0)                  sigma' = [z_out > 0]           (z_out)
#   leaky_relu  sigma(z) = z if z > 0 else alpha z    sigma' = 1 if z_out > 0 else alpha
#                                                     (z_out, valid because alpha >= 0)
#   gelu        sigma(z) = z Phi(z)  (exact, erf)     sigma' = Phi(z) + z phi(z)     (z_in)
#   softmax     s = e^(z - max z) / sum e^(z - max z), row-wise; its Jacobian is not diagonal:
#               (J^T g)_j = s_j (g_j - <g, s>)                                       (z_out)
# gelu is PyTorch's default, exact formula (approximate="none"), not the tanh approximation.
# Only gelu needs z_in; every other derivative comes from the cached z_out.
#
# Rows, not elements: a row function switches on the activation once and then runs a plain loop,
# so the switch is outside the hot loop. The kernels call these on one row at a time, inside their
# own prange over rows.

from cython cimport floating
from libc.math cimport exp, expf, tanh, tanhf, erf, erff, log, logf, log1p, log1pf, sqrt, sqrtf

from bpcore._openmp cimport COST_EPILOGUE, COST_TRANSCENDENTAL

cdef enum:
    IDENTITY = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    LEAKY_RELU = 4
    GELU = 5
    SOFTMAX = 6

# What one element of sigma and of sigma' costs, for the parallel threshold (_openmp.pxd): only
# identity and the relus are copy-like; gelu' is the one derivative that evaluates erf and exp.
cdef inline Py_ssize_t sigma_cost(int act) noexcept nogil:
    if act == IDENTITY or act == RELU or act == LEAKY_RELU:
        return COST_EPILOGUE
    return COST_TRANSCENDENTAL

cdef inline Py_ssize_t sigma_prime_cost(int act) noexcept nogil:
    return COST_TRANSCENDENTAL if act == GELU else COST_EPILOGUE


# 1 / sqrt(2) and 1 / sqrt(2 pi), for gelu
cdef extern from *:
    """
    #define BP_INV_SQRT2 0.70710678118654752440
    #define BP_INV_SQRT_2PI 0.39894228040143267794
    """
    double INV_SQRT2 "BP_INV_SQRT2"
    double INV_SQRT_2PI "BP_INV_SQRT_2PI"


cdef inline floating f_exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating f_log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating f_log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating f_sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


# ---- sigmoid ---------------------------------------------------------------------------------
cdef inline floating sigmoid(floating z) noexcept nogil:
    # Two branches so that exp never overflows: for z << 0, 1 / (1 + e^-z) would compute e^-z = inf.
    cdef floating e
    if z >= 0:
        return 1 / (1 + f_exp(-z))
    e = f_exp(z)
    return e / (1 + e)

cdef inline floating sigmoid_prime(floating z_out) noexcept nogil:
    return z_out * (1 - z_out)


# ---- tanh ------------------------------------------------------------------------------------
cdef inline floating tanh_(floating z) noexcept nogil:
    if floating is float:
        return tanhf(z)
    else:
        return tanh(z)

cdef inline floating tanh_prime(floating z_out) noexcept nogil:
    return 1 - z_out * z_out


# ---- relu and leaky relu -----------------------------------------------------------------------
cdef inline floating relu(floating z) noexcept nogil:
    return z if z > 0 else 0

cdef inline floating relu_prime(floating z_out) noexcept nogil:
    return 1 if z_out > 0 else 0

cdef inline floating leaky_relu(floating z, floating alpha) noexcept nogil:
    return z if z > 0 else alpha * z

cdef inline floating leaky_relu_prime(floating z_out, floating alpha) noexcept nogil:
    return 1 if z_out > 0 else alpha


# ---- gelu (exact) ------------------------------------------------------------------------------
cdef inline floating gelu(floating z) noexcept nogil:
    if floating is float:
        return 0.5 * z * (1 + erff(z * <float>INV_SQRT2))
    else:
        return 0.5 * z * (1 + erf(z * INV_SQRT2))

cdef inline floating gelu_prime(floating z_in) noexcept nogil:
    if floating is float:
        return (0.5 * (1 + erff(z_in * <float>INV_SQRT2))
                + z_in * <float>INV_SQRT_2PI * expf(-0.5 * z_in * z_in))
    else:
        return 0.5 * (1 + erf(z_in * INV_SQRT2)) + z_in * INV_SQRT_2PI * exp(-0.5 * z_in * z_in)


# ---- rows --------------------------------------------------------------------------------------
cdef inline void softmax_row(const floating* z_in, floating* z_out, Py_ssize_t n) noexcept nogil:
    # Max-subtracted: every exponent is <= 0, so nothing overflows and the largest term is 1.
    cdef Py_ssize_t j
    cdef floating m = z_in[0], total = 0
    for j in range(1, n):
        if z_in[j] > m:
            m = z_in[j]
    for j in range(n):
        z_out[j] = f_exp(z_in[j] - m)
        total = total + z_out[j]
    total = 1 / total
    for j in range(n):
        z_out[j] = z_out[j] * total


cdef inline void activate_row(int act, floating alpha, const floating* b,
                              floating* z_in, floating* z_out, Py_ssize_t n) noexcept nogil:
    """z_in += b (if b is not NULL), then z_out = sigma(z_in). z_out may be z_in itself."""
    cdef Py_ssize_t j
    if b != NULL:
        for j in range(n):
            z_in[j] = z_in[j] + b[j]
    if act == IDENTITY:
        if z_out != z_in:
            for j in range(n):
                z_out[j] = z_in[j]
    elif act == SIGMOID:
        for j in range(n):
            z_out[j] = sigmoid(z_in[j])
    elif act == TANH:
        for j in range(n):
            z_out[j] = tanh_(z_in[j])
    elif act == RELU:
        for j in range(n):
            z_out[j] = relu(z_in[j])
    elif act == LEAKY_RELU:
        for j in range(n):
            z_out[j] = leaky_relu(z_in[j], alpha)
    elif act == GELU:
        for j in range(n):
            z_out[j] = gelu(z_in[j])
    elif act == SOFTMAX:
        softmax_row(z_in, z_out, n)


cdef inline void backprop_row(int act, floating alpha, const floating* z_in,
                              const floating* z_out, floating* g, Py_ssize_t n) noexcept nogil:
    """g = J_sigma^T g in place: g * sigma'(z) for elementwise activations, the softmax
    Jacobian-vector product for softmax. z_in is read only for gelu (it may be NULL otherwise)."""
    cdef Py_ssize_t j
    cdef floating dot
    if act == IDENTITY:
        return
    elif act == SIGMOID:
        for j in range(n):
            g[j] = g[j] * sigmoid_prime(z_out[j])
    elif act == TANH:
        for j in range(n):
            g[j] = g[j] * tanh_prime(z_out[j])
    elif act == RELU:
        for j in range(n):
            g[j] = g[j] * relu_prime(z_out[j])
    elif act == LEAKY_RELU:
        for j in range(n):
            g[j] = g[j] * leaky_relu_prime(z_out[j], alpha)
    elif act == GELU:
        for j in range(n):
            g[j] = g[j] * gelu_prime(z_in[j])
    elif act == SOFTMAX:
        dot = 0
        for j in range(n):
            dot = dot + g[j] * z_out[j]
        for j in range(n):
            g[j] = z_out[j] * (g[j] - dot)
