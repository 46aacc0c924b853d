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
from libc.math cimport (exp, expf, tanh, tanhf, erf, erff, log, logf, log1p, log1pf, sqrt, sqrtf,
                        fabs, fabsf)

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


cdef inline floating f_abs(floating x) noexcept nogil:
    # fabsf for float32 (a mask on the sign bit, which vectorises), not a round trip to double
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


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


# ---- a vectorisable tanh for whole rows --------------------------------------------------------
# libm's tanhf/tanh are scalar calls (glibc's goes through expm1 for |x| > ~0.55), and they were a
# large share of the deep tanh network's training step (measured: see bench/README.md, Loops
# written to vectorise). These row functions compute tanh with
# polynomials that gcc vectorises (SSE2 everywhere; AVX2+FMA through target_clones on CPUs that
# have it; setup.py's -fno-trapping-math lets gcc turn the branch selects into blends):
#   |x| < 0.625   x + x^3 P(x^2)             (float; Cephes tanhf)   x + x^3 P(x^2)/Q(x^2) (double)
#   otherwise     1 - 2 / (e^{2|x|} + 1)     with e^t = 2^k p(r), t = k ln2 + r, |r| <= ln2/2
# Measured against an exact tanh (double for float32, long double for double) on 4M points in
# [-20, 20] and in [-3, 3]: max error 1.30 ulp in float32, 1.45 ulp in double (of the correctly
# rounded result); tests/test_activations_fast.py checks <= 2 ulp on 0.5M points in each of
# [-0.7, 0.7], [-3, 3] and [-25, 25]. NaN gives NaN, +-inf gives +-1.
cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
      /* One build, two code paths picked at load time by the CPU: plain x86-64 (SSE2) for any
         machine, x86-64-v3 (AVX2 + FMA) where available. Not -march=native: the wheel must run
         everywhere. */
      #define BP_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
    #else
      #define BP_CLONES
    #endif

    /* Round-to-nearest by the magic-number trick: adding 1.5 * 2^23 (2^52 for double) to a small
       t puts round(t) in the low mantissa bits, so k and 2^k come from integer adds and shifts on
       the bits: no float-int conversion, no floor (SSE2 has neither in vector form for these
       widths). */
    static inline float bp_bitsf(int32_t b) { float r; memcpy(&r, &b, 4); return r; }
    static inline int32_t bp_intf(float f) { int32_t b; memcpy(&b, &f, 4); return b; }
    static inline double bp_bitsd(int64_t b) { double r; memcpy(&r, &b, 8); return r; }
    static inline int64_t bp_intd(double f) { int64_t b; memcpy(&b, &f, 8); return b; }
    #define BP_MAGICF 12582912.0f              /* 1.5 * 2^23 */
    #define BP_MAGICD 6755399441055744.0       /* 1.5 * 2^52 */

    /* tanh(x): |x| < 0.625: x + x^3 P(x^2) (Cephes tanhf's polynomial; tanh's odd Taylor-like
       series, no cancellation); otherwise 1 - 2 / (e^{2|x|} + 1) with e^t = 2^k p(r),
       t = k ln2 + r, |r| <= ln2/2 (Cephes expf's polynomial), the sign restored at the end. Both
       branches are computed and one selected, so the loop has no branch and vectorises. NaN
       propagates (the clamp keeps NaN), +-inf gives +-1. */
    BP_CLONES
    static void bp_tanh_row_f(const float* x, float* y, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; j++) {
            float v = x[j], a = fabsf(v), z = v * v;
            float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z
                             - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                           - 3.33332819422e-1f) * z * v + v;
            float t = 2.0f * a;
            t = t > 20.0f ? 20.0f : t;            /* tanh(10) rounds to 1 in float */
            float kb = t * 1.44269504088896341f + BP_MAGICF;     /* round(t / ln2) in the bits */
            float k = kb - BP_MAGICF;
            float r = t - k * 0.693359375f + k * 2.12194440e-4f;  /* |r| <= ln2 / 2 */
            float p = ((((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                          + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f)
                        * r * r + r + 1.0f)
                       * bp_bitsf((bp_intf(kb) - bp_intf(BP_MAGICF) + 127) << 23);
            float large = copysignf(1.0f - 2.0f / (p + 1.0f), v);
            y[j] = a < 0.625f ? small : large;
        }
    }

    /* The same for double: |x| < 0.625: x + x^3 P(x^2)/Q(x^2) (Cephes tanh); otherwise
       1 - 2 / (e^{2|x|} + 1) with Cephes exp's Pade form
       e^r = (Q(r^2) + r P(r^2)) / (Q(r^2) - r P(r^2)), so that
       2 / (e + 1) = 2 (Q - rP) / (2^k (Q + rP) + Q - rP). The two branches share one division
       (divisions are the slow part of the vector loop). */
    BP_CLONES
    static void bp_tanh_row_d(const double* x, double* y, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; j++) {
            double v = x[j], a = fabs(v), z = v * v;
            int is_small = a < 0.625;
            double sp = ((-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
                         - 1.61468768441708447952e3);
            double sq = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
                        + 4.84406305325125486048e3;
            double t = 2.0 * a;
            t = t > 40.0 ? 40.0 : t;              /* tanh(20) rounds to 1 in double */
            double kb = t * 1.4426950408889634073599 + BP_MAGICD;
            double k = kb - BP_MAGICD;
            double r = t - k * 6.93145751953125e-1 - k * 1.42860682030941723212e-6;
            double rr = r * r;
            double px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                             + 9.99999999999999999910e-1);
            double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                        + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
            double p2k = bp_bitsd((bp_intd(kb) - bp_intd(BP_MAGICD) + 1023) << 52);
            double num = is_small ? sp : 2.0 * (q - px);
            double den = is_small ? sq : p2k * (q + px) + (q - px);
            double ratio = num / den;
            y[j] = is_small ? v + v * z * ratio : copysign(1.0 - ratio, v);
        }
    }

    /* e^x for a row of x <= 0 (softmax's max-subtracted logits), vectorised like tanh above:
       e^x = 2^k p(r), x = k ln2 + r, |r| <= ln2/2, Cephes expf's polynomial. Below -87.3365 the
       result is under float's smallest normal: 0 is returned (off by < 1.2e-38). NaN gives NaN.
       glibc's expf is a scalar call: with it, softmax over 10 outputs was most of predict's time
       outside the products on the digits network (measured: see bench/README.md, Loops written
       to vectorise). */
    BP_CLONES
    static void bp_exp_row_f(const float* x, float* y, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; j++) {
            float v = x[j];
            float t = v < -87.3365448f ? -87.3365448f : v;   /* ln of the smallest normal */
            float kb = t * 1.44269504088896341f + BP_MAGICF;
            float k = kb - BP_MAGICF;
            float r = t - k * 0.693359375f + k * 2.12194440e-4f;
            float p = ((((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                          + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f)
                        * r * r + r + 1.0f)
                       * bp_bitsf((bp_intf(kb) - bp_intf(BP_MAGICF) + 127) << 23);
            y[j] = v < -87.3365448f ? 0.0f : p;
        }
    }
    """
    void bp_exp_row_f(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void bp_tanh_row_f(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void bp_tanh_row_d(const double* x, double* y, Py_ssize_t n) noexcept nogil


cdef inline void tanh_row(const floating* z_in, floating* z_out, Py_ssize_t n) noexcept nogil:
    if floating is float:
        bp_tanh_row_f(z_in, z_out, n)
    else:
        bp_tanh_row_d(z_in, z_out, n)


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
cdef inline void softmax_rows(const floating* b, floating* z_in, floating* z_out, Py_ssize_t rows,
                              Py_ssize_t n) noexcept nogil:
    # Row-wise softmax of a block of rows (z_in += b first when b is not NULL); z_out may be z_in.
    # Max-subtracted: every exponent is <= 0, so nothing overflows and the largest term is 1.
    # The exponentials of the whole block go through one vectorised call: per row, with 10
    # outputs, the call and the loop's tail cost more than the arithmetic.
    cdef Py_ssize_t i, j
    cdef floating m, total
    cdef floating* zi
    cdef floating* zo
    for i in range(rows):
        zi, zo = z_in + i * n, z_out + i * n
        if b != NULL:
            for j in range(n):
                zi[j] = zi[j] + b[j]
        m = zi[0]
        for j in range(1, n):
            if zi[j] > m:
                m = zi[j]
        for j in range(n):
            zo[j] = zi[j] - m
    if floating is float:
        bp_exp_row_f(z_out, z_out, rows * n)
    else:
        for j in range(rows * n):
            z_out[j] = exp(z_out[j])
    for i in range(rows):
        zo = z_out + i * n
        total = 0
        for j in range(n):
            total = total + zo[j]
        total = 1 / total
        for j in range(n):
            zo[j] = zo[j] * total


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
        tanh_row(z_in, z_out, n)
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
        softmax_rows(NULL, z_in, z_out, 1, n)


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
