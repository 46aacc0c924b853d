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
#   elu         sigma(z) = z if z > 0 else e^z - 1        sigma' = 1 if z_out > 0 else z_out + 1
#                                                                                    (z_out)
#   selu        sigma(z) = l z if z > 0 else l a (e^z - 1) sigma' = l if z_out > 0 else z_out + l a
#               (l = 1.0507..., a = 1.6732..., Klambauer et al.'s constants)         (z_out)
#   silu        sigma(z) = z s(z), s the sigmoid          sigma' = s (1 + z (1 - s))  (z_in)
#   (swish)
#   softplus    sigma(z) = log(1 + e^z), = z for z > 20   sigma' = s(z), = 1 for z > 20 (z_in)
#   mish        sigma(z) = z tanh(softplus(z))            sigma' = t + z s(z) (1 - t^2),
#                                                         t = tanh(softplus(z))      (z_in)
#   hard_sigmoid sigma(z) = min(max(z + 3, 0), 6) / 6     sigma' = 1/6 if -3 < z < 3 else 0
#                                                                                    (z_in)
#   exponential sigma(z) = e^z                            sigma' = z_out             (z_out)
# gelu is PyTorch's default, exact formula (approximate="none"), not the tanh approximation.
# Each is PyTorch's formula, so forward and derivative compare to torch.nn.functional directly:
# elu is F.elu with alpha = 1 (Keras' "elu" default too), softplus is F.softplus with its default
# beta = 1, threshold = 20 (linear above 20, where log(1 + e^z) - z < 2.1e-9), mish computes its
# softplus without that threshold (as F.mish does), and hard_sigmoid is relu6(z + 3) / 6: Keras 3's
# hard_sigmoid and F.hardsigmoid (Keras 2's was the different 0.2 z + 0.5, clipped).
# elu and selu take sigma' from z_out as torch's own in-place backward does (no exponential in the
# backward pass); near z << 0 that is z_out + 1 = e^z to within one rounding of 1 (absolute).
# hard_sigmoid reads z_in because z + 3 rounds to 6 for z just under 3 (z_out = 1, yet sigma' is
# 1/6 there); silu, softplus and mish need s(z), which z_out does not give cheaply.
#
# Rows, not elements: a row function switches on the activation once and then runs a plain loop,
# so the switch is outside the hot loop. The kernels call these on one row at a time, inside their
# own prange over rows.

from cython cimport floating
from libc.math cimport (exp, expf, expm1, expm1f, tanh, tanhf, erf, erff, log, logf, log1p,
                        log1pf, sqrt, sqrtf, fabs, fabsf)

from bpcore._openmp cimport COST_EPILOGUE, COST_TRANSCENDENTAL

cdef enum:
    IDENTITY = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    LEAKY_RELU = 4
    GELU = 5
    SOFTMAX = 6
    ELU = 7
    SELU = 8
    SILU = 9
    SOFTPLUS = 10
    MISH = 11
    HARD_SIGMOID = 12
    EXPONENTIAL = 13

# What one element of sigma and of sigma' costs, for the parallel threshold (_openmp.pxd): only
# identity, the relus and hard_sigmoid are copy-like; the derivatives that re-evaluate a
# transcendental function of z_in (gelu, silu, softplus, mish) are the expensive ones.
cdef inline Py_ssize_t sigma_cost(int act) noexcept nogil:
    if act == IDENTITY or act == RELU or act == LEAKY_RELU or act == HARD_SIGMOID:
        return COST_EPILOGUE
    return COST_TRANSCENDENTAL

cdef inline Py_ssize_t sigma_prime_cost(int act) noexcept nogil:
    if act == GELU or act == SILU or act == SOFTPLUS or act == MISH:
        return COST_TRANSCENDENTAL
    return COST_EPILOGUE


# 1 / sqrt(2) and 1 / sqrt(2 pi), for gelu
cdef extern from *:
    """
    #define BP_INV_SQRT2 0.70710678118654752440
    #define BP_INV_SQRT_2PI 0.39894228040143267794
    """
    double INV_SQRT2 "BP_INV_SQRT2"
    double INV_SQRT_2PI "BP_INV_SQRT_2PI"

# selu's lambda and alpha (PyTorch's constants, to the digits it writes them)
cdef extern from *:
    """
    #define BP_SELU_SCALE 1.0507009873554804934193349852946
    #define BP_SELU_ALPHA 1.6732632423543772848170429916717
    """
    double SELU_SCALE "BP_SELU_SCALE"
    double SELU_ALPHA "BP_SELU_ALPHA"


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


cdef inline floating f_expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


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


# ---- elu and selu (sigma' from z_out) -----------------------------------------------------------
cdef inline floating elu(floating z) noexcept nogil:
    return z if z > 0 else f_expm1(z)

cdef inline floating elu_prime(floating z_out) noexcept nogil:
    return 1 if z_out > 0 else z_out + 1

cdef inline floating selu(floating z) noexcept nogil:
    if z > 0:
        return <floating>SELU_SCALE * z
    return <floating>(SELU_SCALE * SELU_ALPHA) * f_expm1(z)

cdef inline floating selu_prime(floating z_out) noexcept nogil:
    return <floating>SELU_SCALE if z_out > 0 else z_out + <floating>(SELU_SCALE * SELU_ALPHA)


# ---- silu, softplus, mish (sigma' from z_in) ----------------------------------------------------
cdef inline floating silu(floating z) noexcept nogil:
    return z * sigmoid(z)

cdef inline floating silu_prime(floating z_in) noexcept nogil:
    cdef floating s = sigmoid(z_in)
    return s * (1 + z_in * (1 - s))

cdef inline floating softplus(floating z) noexcept nogil:
    # PyTorch's threshold: z itself above 20 (beta = 1)
    return z if z > 20 else f_log1p(f_exp(z))

cdef inline floating softplus_prime(floating z_in) noexcept nogil:
    cdef floating e
    if z_in > 20:
        return 1
    e = f_exp(z_in)
    return e / (e + 1)

cdef inline floating mish(floating z) noexcept nogil:
    return z * tanh_(f_log1p(f_exp(z)))

cdef inline floating mish_prime(floating z_in) noexcept nogil:
    cdef floating t = tanh_(f_log1p(f_exp(z_in)))
    return t + z_in * sigmoid(z_in) * (1 - t * t)


# ---- hard_sigmoid (relu6(z + 3) / 6) and exponential -------------------------------------------
cdef inline floating hard_sigmoid(floating z) noexcept nogil:
    cdef floating t = z + 3
    t = 0 if t < 0 else t     # written so that NaN passes through, as in torch
    t = 6 if t > 6 else t
    return t / 6

cdef inline floating hard_sigmoid_prime(floating z_in) noexcept nogil:
    return <floating>(1.0 / 6.0) if (z_in > -3 and z_in < 3) else 0


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


# ---- elu, selu, silu, softplus, mish in float32 through the vectorised exponential --------------
# With libm's scalar expf (and tanhf, log1pf for mish) these activations cost far more than relu
# on the mnist step (measured: see bench/README.md, "Activations and optimizers"). Each needs only
# e = e^-|z| (<= 1, so bp_exp_row_f's range), computed for a chunk of the row into a stack buffer:
#   elu   z > 0: z,   else e - 1            selu  l z,  else l a (e - 1)
#   s(z)  = 1 / (1 + e) for z >= 0, e / (1 + e) below (the sigmoid, no overflow)
#   silu  z s(z)         silu' s (1 + z (1 - s))      softplus' s (1 for z > 20)
#   mish  z t, t = tanh(softplus(z)) = u / (u + 2), u = e^z (e^z + 2): for z >= 0 written in e as
#         t = (1 + 2e) / (1 + 2e + 2e^2), below as u = e (e + 2)       mish' t + z s (1 - t^2)
#   softplus  z above 20, else max(z, 0) + log(1 + e), log(1 + e) = 2 atanh(v), v = e / (2 + e)
#         <= 1/3, by atanh's odd series to v^17 (the first term left out, v^19/19, is < 1e-10 of
#         the sum): no log1pf call
# e - 1 near z = 0 loses the relative precision expm1 keeps (its error is one rounding of 1, 6e-8
# absolute): within float32's tolerance against torch. float64 keeps the exact scalar forms above.
cdef enum:
    EXP_CHUNK = 256

cdef inline void _exp_neg_abs_f(const float* z, float* e, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        e[j] = -fabsf(z[j])
    bp_exp_row_f(e, e, n)


cdef inline void exp_family_forward_f(int act, const float* z_in, float* z_out,
                                      Py_ssize_t n) noexcept nogil:
    """z_out = sigma(z_in) for elu, selu, silu, softplus, mish (z_out may be z_in)."""
    cdef float e[EXP_CHUNK]
    cdef Py_ssize_t lo = 0, k, m
    cdef float z, s, t, u, v, w, ls = <float>SELU_SCALE, la = <float>(SELU_SCALE * SELU_ALPHA)
    while lo < n:
        m = min(<Py_ssize_t>EXP_CHUNK, n - lo)
        _exp_neg_abs_f(z_in + lo, e, m)
        if act == ELU:
            for k in range(m):
                z = z_in[lo + k]
                z_out[lo + k] = z if z > 0 else e[k] - 1
        elif act == SELU:
            for k in range(m):
                z = z_in[lo + k]
                z_out[lo + k] = ls * z if z > 0 else la * (e[k] - 1)
        elif act == SILU:
            for k in range(m):
                z = z_in[lo + k]
                s = (1 if z >= 0 else e[k]) / (1 + e[k])
                z_out[lo + k] = z * s
        elif act == SOFTPLUS:
            for k in range(m):
                z = z_in[lo + k]
                v = e[k] / (2 + e[k])
                w = v * v
                t = 2 * v * (1 + w * (<float>(1.0 / 3) + w * (<float>(1.0 / 5) + w * (
                    <float>(1.0 / 7) + w * (<float>(1.0 / 9) + w * (<float>(1.0 / 11) + w * (
                        <float>(1.0 / 13) + w * (<float>(1.0 / 15) + w * <float>(1.0 / 17)))))))))
                z_out[lo + k] = z if z > 20 else (z if z > 0 else 0) + t
        else:  # MISH
            for k in range(m):
                z = z_in[lo + k]
                u = e[k] * (e[k] + 2)
                t = (1 + 2 * e[k]) / (1 + 2 * e[k] + 2 * e[k] * e[k]) if z >= 0 else u / (u + 2)
                z_out[lo + k] = z * t
        lo += m


cdef inline void exp_family_backward_f(int act, const float* z_in, float* g,
                                       Py_ssize_t n) noexcept nogil:
    """g *= sigma'(z_in) for silu, softplus, mish."""
    cdef float e[EXP_CHUNK]
    cdef Py_ssize_t lo = 0, k, m
    cdef float z, s, t, u
    while lo < n:
        m = min(<Py_ssize_t>EXP_CHUNK, n - lo)
        _exp_neg_abs_f(z_in + lo, e, m)
        if act == SILU:
            for k in range(m):
                z = z_in[lo + k]
                s = (1 if z >= 0 else e[k]) / (1 + e[k])
                g[lo + k] = g[lo + k] * (s * (1 + z * (1 - s)))
        elif act == SOFTPLUS:
            for k in range(m):
                z = z_in[lo + k]
                s = (1 if z >= 0 else e[k]) / (1 + e[k])
                g[lo + k] = g[lo + k] * (1 if z > 20 else s)
        else:  # MISH
            for k in range(m):
                z = z_in[lo + k]
                s = (1 if z >= 0 else e[k]) / (1 + e[k])
                u = e[k] * (e[k] + 2)
                t = (1 + 2 * e[k]) / (1 + 2 * e[k] + 2 * e[k] * e[k]) if z >= 0 else u / (u + 2)
                g[lo + k] = g[lo + k] * (t + z * s * (1 - t * t))
        lo += m


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
    elif act == ELU or act == SELU or act == SILU or act == SOFTPLUS or act == MISH:
        if floating is float:
            exp_family_forward_f(act, z_in, z_out, n)
        elif act == SOFTPLUS:
            for j in range(n):
                z_out[j] = softplus(z_in[j])
        elif act == ELU:
            for j in range(n):
                z_out[j] = elu(z_in[j])
        elif act == SELU:
            for j in range(n):
                z_out[j] = selu(z_in[j])
        elif act == SILU:
            for j in range(n):
                z_out[j] = silu(z_in[j])
        else:
            for j in range(n):
                z_out[j] = mish(z_in[j])
    elif act == HARD_SIGMOID:
        for j in range(n):
            z_out[j] = hard_sigmoid(z_in[j])
    elif act == EXPONENTIAL:
        for j in range(n):
            z_out[j] = f_exp(z_in[j])


cdef inline void backprop_row(int act, floating alpha, const floating* z_in,
                              const floating* z_out, floating* g, Py_ssize_t n) noexcept nogil:
    """g = J_sigma^T g in place: g * sigma'(z) for elementwise activations, the softmax
    Jacobian-vector product for softmax. z_in is read only for gelu, silu, softplus, mish and
    hard_sigmoid (see the header; it may be NULL otherwise)."""
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
    elif act == ELU:
        for j in range(n):
            g[j] = g[j] * elu_prime(z_out[j])
    elif act == SELU:
        for j in range(n):
            g[j] = g[j] * selu_prime(z_out[j])
    elif act == SILU or act == SOFTPLUS or act == MISH:
        if floating is float:
            exp_family_backward_f(act, z_in, g, n)
        elif act == SILU:
            for j in range(n):
                g[j] = g[j] * silu_prime(z_in[j])
        elif act == SOFTPLUS:
            for j in range(n):
                g[j] = g[j] * softplus_prime(z_in[j])
        else:
            for j in range(n):
                g[j] = g[j] * mish_prime(z_in[j])
    elif act == HARD_SIGMOID:
        for j in range(n):
            g[j] = g[j] * hard_sigmoid_prime(z_in[j])
    elif act == EXPONENTIAL:
        for j in range(n):
            g[j] = g[j] * z_out[j]
    elif act == SOFTMAX:
        dot = 0
        for j in range(n):
            dot = dot + g[j] * z_out[j]
        for j in range(n):
            g[j] = z_out[j] * (g[j] - dot)
