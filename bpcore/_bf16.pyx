# bfloat16 matrix products: C = alpha * op(A) @ op(B) + beta * C (+ bias, then an activation), the
# products of bf16-rounded float32 inputs accumulated in float32 (Keras' "mixed_bfloat16": every
# operand is rounded once, round to nearest even, every sum stays float32).
#
# Two paths with the same semantics, chosen once per process (active_path):
#   BF16_PATH_AVX512    bp's packed GEMM in _bf16_gemm.h (vdpbf16ps, an 8 x 32 register tile,
#                       the operands rounded to bf16 while they are packed; threads by OpenMP)
#   BF16_PATH_FALLBACK  every other CPU (and BP_BF16_PATH=fallback): the operands are rounded to
#                       bf16 *values* kept in float32 copies, then multiplied by sgemm (_blas.gemm).
#                       A product of two bf16 values is exact in float32 (8 + 8 significant bits),
#                       so sgemm's fused multiply-adds compute exactly the products of the rounded
#                       inputs with float32 sums: the same semantics, at float32's speed plus one
#                       rounding pass over each operand
#                       (measured: bench/README.md, "bfloat16 GEMM").
# The AMX (Sapphire Rapids) and ARM BFMMLA kernels get their path code in _bf16.pxd, a probe in
# bp_bf16_cpu_path and one branch in each dispatch below (pack_b, gemm_packed).
#
# A weight that many products read (W in z_out_prev @ W, W.T in delta @ W.T) is packed once per
# update with pack_b and used with gemm_packed; gemm packs op(B) itself, for the operands that
# change every product (z_out_prev.T @ delta).
#
# Threads: the AVX512 path runs on the n_threads it is given (OpenMP) and is bit-identical for any
# thread count (each C entry is summed by one thread in a fixed order); the fallback's sgemm
# threads itself under bp's BLAS setting (bp._threads), and its rounding passes use n_threads.

from libc.stdint cimport uint32_t
from libc.stdlib cimport free, malloc

import os

import numpy as np

from bpcore._blas cimport gemm as blas_gemm

cdef extern from "_bf16_gemm.h" nogil:
    int BP_BF16_HAVE_AVX512
    int BP_BF16_FALLBACK_HEADER
    int bp_bf16_cpu_path()
    size_t bp_bf16_packed_b_bytes(int path, Py_ssize_t k, Py_ssize_t n)
    void bp_bf16_round_f32(Py_ssize_t rows, Py_ssize_t cols, const float* x, Py_ssize_t ldx,
                           float* out, Py_ssize_t ldo, int n_threads)
    uint32_t bp_bf16_round_bits(uint32_t u)
    void* bp_bf16_alloc(size_t nbytes)
    void bp_bf16_free(void* p)
    void* bp_bf16_scratch(size_t nbytes)
    void bp_bf16_pack_b_avx512(int trans_b, Py_ssize_t k, Py_ssize_t n, const float* B,
                               Py_ssize_t ldb, void* out, int n_threads)
    int bp_bf16_gemm_packed_avx512(int trans_a, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                                   float alpha, const float* A, Py_ssize_t lda, const void* Bp,
                                   float beta, float* C, Py_ssize_t ldc, const float* bias,
                                   int act, int n_threads)
    float bp_bf16_dot_peak_loop(long reps)
    void bp_bf16_round_hw(const float* x, Py_ssize_t n, float* out)

PATH_NAMES = {
    BF16_PATH_FALLBACK: ("fallback (sgemm on bf16-rounded inputs: mixed_bfloat16 costs "
                         "float32's time plus a rounding pass)"),
    BF16_PATH_AVX512: "avx512_bf16",
}
_PATH_CODES = {"fallback": BF16_PATH_FALLBACK, "avx512_bf16": BF16_PATH_AVX512}
ACTIVATIONS = {"identity": BF16_ACT_NONE, "relu": BF16_ACT_RELU}

cdef int _cpu_path = bp_bf16_cpu_path()
cdef int _path = _cpu_path


cdef int active_path() noexcept nogil:
    return _path


cdef void* alloc_packed(size_t nbytes) noexcept nogil:
    return bp_bf16_alloc(nbytes)


cdef void free_packed(void* p) noexcept nogil:
    bp_bf16_free(p)


cdef size_t packed_b_bytes(int path, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    return bp_bf16_packed_b_bytes(path, k, n)


cdef int pack_b(int path, bint trans_b, Py_ssize_t k, Py_ssize_t n,
                const float* B, Py_ssize_t ldb,
                void* packed,
                int n_threads) noexcept nogil:
    if k <= 0 or n <= 0:
        return 0
    if path == BF16_PATH_AVX512:
        bp_bf16_pack_b_avx512(trans_b, k, n, B, ldb, packed, n_threads)
    else:  # the fallback's format: trans_b in a header, then bf16(B) in B's own layout
        (<int*>packed)[0] = trans_b
        if trans_b:
            bp_bf16_round_f32(n, k, B, ldb, _fallback_data(packed), k, n_threads)
        else:
            bp_bf16_round_f32(k, n, B, ldb, _fallback_data(packed), n, n_threads)
    return 0


cdef inline float* _fallback_data(const void* packed) noexcept nogil:
    return <float*>(<char*>packed + BP_BF16_FALLBACK_HEADER)


cdef void _epilogue(Py_ssize_t m, Py_ssize_t n, float* C, Py_ssize_t ldc, const float* bias,
                    int act) noexcept nogil:
    # the fallback's output stage (the AVX512 kernel fuses it into its stores)
    cdef Py_ssize_t i, j
    cdef float v
    if bias == NULL and act == BF16_ACT_NONE:
        return
    for i in range(m):
        for j in range(n):
            v = C[i * ldc + j]
            if bias != NULL:
                v = v + bias[j]
            if act == BF16_ACT_RELU and not v > 0:
                v = 0  # max(v, 0) as vmaxps gives it: a NaN becomes 0 on both paths
            C[i * ldc + j] = v


cdef int _gemm_fallback(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                        float alpha, const float* A, Py_ssize_t lda,
                        const float* B_rounded, Py_ssize_t ldb,
                        float beta, float* C, Py_ssize_t ldc,
                        const float* bias, int act, int n_threads) noexcept nogil:
    # A is rounded into a contiguous copy of its stored layout (rows x cols), B is already rounded
    cdef Py_ssize_t rows = k if trans_a else m, cols = m if trans_a else k
    cdef float* Ar = <float*>bp_bf16_scratch(<size_t>(rows * cols) * sizeof(float))
    if Ar == NULL:
        return -1
    bp_bf16_round_f32(rows, cols, A, lda, Ar, cols, n_threads)
    blas_gemm(trans_a, trans_b, m, n, k, alpha, Ar, cols, B_rounded, ldb, beta, C, ldc)
    _epilogue(m, n, C, ldc, bias, act)
    return 0


cdef void _k_zero(Py_ssize_t m, Py_ssize_t n, float beta, float* C, Py_ssize_t ldc,
                  const float* bias, int act) noexcept nogil:
    # an empty sum: C = beta * C (beta == 0 overwrites), then the epilogue
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            C[i * ldc + j] = 0 if beta == 0 else beta * C[i * ldc + j]
    _epilogue(m, n, C, ldc, bias, act)


cdef int gemm_packed(int path, bint trans_a, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     float alpha, const float* A, Py_ssize_t lda, const void* packed_B,
                     float beta, float* C, Py_ssize_t ldc,
                     const float* bias, int act,
                     int n_threads) noexcept nogil:
    if m <= 0 or n <= 0:
        return 0
    if k <= 0:
        _k_zero(m, n, beta, C, ldc, bias, act)
        return 0
    if path == BF16_PATH_AVX512:
        return bp_bf16_gemm_packed_avx512(trans_a, m, n, k, alpha, A, lda, packed_B, beta, C, ldc,
                                          bias, act, n_threads)
    cdef bint trans_b = (<const int*>packed_B)[0]
    return _gemm_fallback(trans_a, trans_b, m, n, k, alpha, A, lda, _fallback_data(packed_B),
                          k if trans_b else n, beta, C, ldc, bias, act, n_threads)


cdef int gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
              float alpha, const float* A, Py_ssize_t lda,
              const float* B, Py_ssize_t ldb,
              float beta, float* C, Py_ssize_t ldc,
              const float* bias, int act,
              int n_threads) noexcept nogil:
    cdef int path = _path, status
    cdef void* packed
    cdef Py_ssize_t rows, cols
    if m <= 0 or n <= 0:
        return 0
    if k <= 0:
        _k_zero(m, n, beta, C, ldc, bias, act)
        return 0
    if path == BF16_PATH_AVX512:
        packed = bp_bf16_alloc(bp_bf16_packed_b_bytes(path, k, n))
        if packed == NULL:
            return -1
        bp_bf16_pack_b_avx512(trans_b, k, n, B, ldb, packed, n_threads)
        status = bp_bf16_gemm_packed_avx512(trans_a, m, n, k, alpha, A, lda, packed, beta, C, ldc,
                                            bias, act, n_threads)
        bp_bf16_free(packed)
        return status
    # fallback: round B in its stored layout (sgemm transposes it for free)
    rows = n if trans_b else k
    cols = k if trans_b else n
    packed = malloc(<size_t>(rows * cols) * sizeof(float))
    if packed == NULL:
        return -1
    bp_bf16_round_f32(rows, cols, B, ldb, <float*>packed, cols, n_threads)
    status = _gemm_fallback(trans_a, trans_b, m, n, k, alpha, A, lda, <const float*>packed, cols,
                            beta, C, ldc, bias, act, n_threads)
    free(packed)
    return status


# ---- the Python side: the path, and checked entries for the tests and the benchmarks ----------

def kernel_path():
    """The bf16 GEMM path this process runs: "avx512_bf16" or the fallback's description."""
    return PATH_NAMES[_path]


def cpu_path():
    """The path this CPU and this build could run (what set_path("auto") picks)."""
    return PATH_NAMES[_cpu_path]


def set_path(str name):
    """Force the bf16 path: "auto" (the CPU's best), "fallback" or "avx512_bf16".

    Weights packed earlier keep the path they were packed for (PackedB.path).
    """
    global _path
    if name == "auto":
        _path = _cpu_path
        return
    if name not in _PATH_CODES:
        raise ValueError(f"expected one of 'auto', 'fallback', 'avx512_bf16'. "
                         f"Received: path={name!r}")
    if _PATH_CODES[name] == BF16_PATH_AVX512 and _cpu_path != BF16_PATH_AVX512:
        raise ValueError("this CPU (or this build) has no AVX512-BF16 kernel. "
                         "Received: path='avx512_bf16'")
    _path = _PATH_CODES[name]


if os.environ.get("BP_BF16_PATH", "auto") not in ("", "auto"):
    set_path(os.environ["BP_BF16_PATH"])


def _check_matrix(name, a, writeable=False):
    """A 2-D float32 array with unit column stride; returns its row stride in elements."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 2:
        got = (f"{a.dtype} array of {a.ndim} dimensions" if isinstance(a, np.ndarray)
               else type(a).__name__)
        raise TypeError(f"expected a 2-D float32 array. Received: {name}={got}")
    rows, cols = a.shape
    if a.size == 0:
        return max(cols, 1)
    if cols > 1 and a.strides[1] != 4:
        raise ValueError(f"expected rows with contiguous elements (column stride 4 bytes). "
                         f"Received: {name}.strides={a.strides}")
    ld = a.strides[0] // 4 if rows > 1 else cols
    if rows > 1 and (a.strides[0] % 4 or ld < cols):
        raise ValueError(f"expected a row stride of at least {cols} elements. "
                         f"Received: {name}.strides={a.strides}")
    if writeable and not a.flags.writeable:
        raise ValueError(f"expected a writeable output array. Received: read-only {name}")
    return max(ld, 1)


def _check_epilogue(bias, activation, n):
    if activation not in ACTIVATIONS:
        raise ValueError(f"expected activation in {sorted(ACTIVATIONS)}. "
                         f"Received: activation={activation!r}")
    if bias is not None:
        if not isinstance(bias, np.ndarray) or bias.dtype != np.float32 or bias.shape != (n,):
            got = (f"{bias.dtype} array of shape {bias.shape}" if isinstance(bias, np.ndarray)
                   else type(bias).__name__)
            raise ValueError(f"expected a float32 bias of shape ({n},). Received: bias={got}")
        bias = np.ascontiguousarray(bias)
    return bias, ACTIVATIONS[activation]


def _check_threads(n_threads):
    if not isinstance(n_threads, (int, np.integer)) or isinstance(n_threads, bool) or n_threads < 1:
        raise ValueError(f"expected a positive integer. Received: n_threads={n_threads!r}")


cdef const float* _ptr(const float[:, :] a):
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef const float* _bias_ptr(const float[::1] b):
    return &b[0] if b is not None and b.shape[0] > 0 else NULL


class PackedB:
    """op(B) (k x n) packed in bf16 for one path: the weight as gemm_packed reads it.

    Attributes: path (the path code), k, n, trans_b, data (the bytes, a uint8 array).
    """

    def __init__(self, path, k, n, trans_b, data):
        self.path, self.k, self.n, self.trans_b, self.data = path, k, n, trans_b, data

    def __repr__(self):
        return (f"PackedB(path={PATH_NAMES[self.path]!r}, k={self.k}, n={self.n}, "
                f"trans_b={self.trans_b}, nbytes={self.data.nbytes})")


def pack_weight(B, bint trans_b=False, int n_threads=1):
    """Pack op(B) (B, or B.T with trans_b) for the active path; returns a PackedB."""
    ldb = _check_matrix("B", B)
    _check_threads(n_threads)
    k, n = (B.shape[1], B.shape[0]) if trans_b else B.shape
    cdef int path = _path
    data = np.empty(max(packed_b_bytes(path, k, n), 1) + 64, dtype=np.uint8)
    off = (-data.ctypes.data) % 64           # 64-byte aligned start
    data = data[off:off + packed_b_bytes(path, k, n)]
    cdef unsigned char[::1] buf = data if data.shape[0] else np.empty(1, np.uint8)
    cdef const float* Bp = _ptr(B)
    cdef Py_ssize_t kk = k, nn = n, ld = ldb
    with nogil:
        pack_b(path, trans_b, kk, nn, Bp, ld, &buf[0], n_threads)
    return PackedB(path, k, n, bool(trans_b), data)


def _gemm(bint trans_a, bint trans_b, double alpha, A, B, double beta, C, bias=None,
          str activation="identity", int n_threads=1):
    """C = alpha * op(A) @ op(B) + beta * C (+ bias, then activation), in bf16 products.

    A, B, C: 2-D float32 arrays whose rows are contiguous (any row stride: slices work). B may be
    a PackedB (from pack_weight; trans_b is then ignored: the packing fixed it). For the tests
    and the benchmarks; the engine calls the nogil gemm / gemm_packed.
    """
    lda = _check_matrix("A", A)
    ldc = _check_matrix("C", C, writeable=True)
    _check_threads(n_threads)
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    a_rows = A.shape[1] if trans_a else A.shape[0]
    if a_rows != m:
        raise ValueError(f"expected op(A) with {m} rows (C has {m}). "
                         f"Received: A.shape={A.shape}, trans_a={bool(trans_a)}")
    if isinstance(B, PackedB):
        if (B.k, B.n) != (k, n):
            raise ValueError(f"expected a packed op(B) of shape ({k}, {n}). "
                             f"Received: {B!r}")
        ldb = 0
    else:
        ldb = _check_matrix("B", B)
        bk, bn = (B.shape[1], B.shape[0]) if trans_b else B.shape
        if (bk, bn) != (k, n):
            raise ValueError(f"expected op(B) of shape ({k}, {n}). "
                             f"Received: B.shape={B.shape}, trans_b={bool(trans_b)}")
    bias, act = _check_epilogue(bias, activation, n)
    cdef const float* Ap = _ptr(A)
    cdef float* Cp = <float*>_ptr(C)
    cdef const float* bp = _bias_ptr(bias)
    cdef const float* Bp = NULL
    cdef unsigned char[::1] packed
    cdef const void* pp = NULL
    cdef int status, path = 0, ac = act
    cdef Py_ssize_t mm = m, nn = n, kk = k, la = lda, lb = ldb, lc = ldc
    cdef float a32 = <float>alpha, b32 = <float>beta
    if isinstance(B, PackedB):
        path = B.path
        if B.data.shape[0]:
            packed = B.data
            pp = &packed[0]
        with nogil:
            status = gemm_packed(path, trans_a, mm, nn, kk, a32, Ap, la, pp, b32, Cp, lc,
                                 bp, ac, n_threads)
    else:
        Bp = _ptr(B)
        with nogil:
            status = gemm(trans_a, trans_b, mm, nn, kk, a32, Ap, la, Bp, lb, b32, Cp, lc,
                          bp, ac, n_threads)
    if status != 0:
        raise MemoryError("bf16 gemm: could not allocate its packing buffers")
    return C


def _round_hw(x):
    """bf16(x) as float32 by the AVX512-BF16 instruction (vcvtne2ps2bf16): the tests compare it
    with the scalar rounding of the fallback and of bp._reference."""
    if _cpu_path != BF16_PATH_AVX512:
        raise RuntimeError("this CPU (or this build) has no AVX512-BF16")
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.empty_like(x)
    cdef const float[::1] xv = x
    cdef float[::1] ov = out
    if x.shape[0]:
        bp_bf16_round_hw(&xv[0], xv.shape[0], &ov[0])
    return out


def _round_c(x):
    """bf16(x) as float32 by the fallback's scalar C rounding (bp_bf16_round_bits)."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(1, -1)
    out = np.empty_like(x)
    cdef const float[:, ::1] xv = x
    cdef float[:, ::1] ov = out
    if x.shape[1]:
        bp_bf16_round_f32(1, xv.shape[1], &xv[0, 0], xv.shape[1], &ov[0, 0], ov.shape[1], 1)
    return out.ravel()


def _dot_peak_loop(long reps):
    """reps rounds of 16 independent vdpbf16ps on registers (64 flops each): the bf16 limit.

    Returns the flops done (0 when this CPU has no AVX512-BF16); the caller times the call.
    """
    cdef float sink
    if _cpu_path != BF16_PATH_AVX512:
        return 0
    with nogil:
        sink = bp_bf16_dot_peak_loop(reps)
    _sink.append(sink)  # the sum is used, so the compiler keeps the loop
    return 16 * 64 * reps


_sink = []
