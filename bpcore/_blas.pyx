# Thin fused wrappers over scipy.linalg.cython_blas (sgemm / dgemm).
#
# bp stores every matrix row-major (C order) and its weights as W[n_in, n_out], so a layer's forward
# product is z_out_prev @ W. BLAS is column-major. A row-major m x n matrix with row stride ld *is*
# the column-major n x m matrix of its transpose with the same leading dimension, so by
# C^T = op(B)^T @ op(A)^T we call the column-major gemm with the operands swapped and the sizes
# (n, m, k): no copy, no transposition in memory (scikit-learn's sklearn/utils/_cython_blas.pyx does
# the same in its _gemm).
#
# Why not always BLAS: a BLAS call has a fixed cost of dispatch and packing before the first
# multiply-add, which can dominate tiny products (the XOR network's 4x2 @ 2x2). Up to
# SMALL_GEMM_WORK multiply-adds our own loops (single-threaded, vectorisable inner loop) are used.
# Measured with bench/kernels.py --gemm-crossover (measured: see bench/README.md, Small products:
# own loops or BLAS): the crossover differs between the three products, and OpenBLAS's
# small-matrix kernels for AVX-512 make BLAS cheap even for tiny products, while our loops are
# built without -march (SSE2); on CPUs or BLAS builds without such kernels the crossover is
# higher. 256 is where the wins and losses of the three products balanced on the machine measured.
#
# Threads: this file never starts threads itself. BLAS threads its own gemm with its own pool,
# which bp._threads holds to the same count as the OpenMP kernels. gemm is never called from
# inside a prange.

from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

cdef Py_ssize_t SMALL_GEMM_WORK = 256


cdef inline void _small_gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                             floating alpha, const floating* A, Py_ssize_t lda,
                             const floating* B, Py_ssize_t ldb,
                             floating beta, floating* C, Py_ssize_t ldc) noexcept nogil:
    cdef Py_ssize_t i, j, p
    cdef floating a, s
    for i in range(m):
        for j in range(n):
            # beta == 0 overwrites, as BLAS does: C may hold garbage (or NaN) on entry.
            C[i * ldc + j] = 0 if beta == 0 else beta * C[i * ldc + j]
    if not trans_b:
        # i-p-j order: the inner loop runs along contiguous rows of B and C and vectorises.
        for i in range(m):
            for p in range(k):
                a = alpha * (A[p * lda + i] if trans_a else A[i * lda + p])
                for j in range(n):
                    C[i * ldc + j] += a * B[p * ldb + j]
    else:
        # op(B) = B.T: entry (p, j) is B[j, p], so each C entry is a dot product of two rows.
        for i in range(m):
            for j in range(n):
                s = 0
                for p in range(k):
                    s = s + (A[p * lda + i] if trans_a else A[i * lda + p]) * B[j * ldb + p]
                C[i * ldc + j] += alpha * s


cdef inline void _blas_gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                            floating alpha, const floating* A, Py_ssize_t lda,
                            const floating* B, Py_ssize_t ldb,
                            floating beta, floating* C, Py_ssize_t ldc) noexcept nogil:
    # Column-major call for C^T (n x m) = op(B)^T (n x k) @ op(A)^T (k x m).
    cdef char ta = b't' if trans_b else b'n'
    cdef char tb = b't' if trans_a else b'n'
    cdef int M = <int>n, N = <int>m, K = <int>k
    cdef int LDA = <int>(ldb if ldb > 1 else 1)
    cdef int LDB = <int>(lda if lda > 1 else 1)
    cdef int LDC = <int>(ldc if ldc > 1 else 1)
    cdef int inc_x = <int>(lda if trans_a else 1), one = 1
    if m == 1:
        # One row: C^T (n) = op(B)^T (n x k) @ x, a matrix-vector product. gemm would pack all of
        # B first (it expects to reuse it over many rows): predict on one row is many times
        # faster through gemv (measured: see bench/README.md, Small products: own loops or BLAS).
        if trans_b:  # op(B)^T = B, stored column-major as k x n
            ta, M, N = b't', <int>k, <int>n
        else:        # op(B)^T = B^T, stored column-major as n x k
            ta, M, N = b'n', <int>n, <int>k
        if floating is float:
            sgemv(&ta, &M, &N, &alpha, <float*>B, &LDA, <float*>A, &inc_x, &beta, C, &one)
        else:
            dgemv(&ta, &M, &N, &alpha, <double*>B, &LDA, <double*>A, &inc_x, &beta, C, &one)
        return
    if floating is float:
        sgemm(&ta, &tb, &M, &N, &K, &alpha, <float*>B, &LDA, <float*>A, &LDB, &beta, C, &LDC)
    else:
        dgemm(&ta, &tb, &M, &N, &K, &alpha, <double*>B, &LDA, <double*>A, &LDB, &beta, C, &LDC)


cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* A, Py_ssize_t lda,
               const floating* B, Py_ssize_t ldb,
               floating beta, floating* C, Py_ssize_t ldc) noexcept nogil:
    if m == 0 or n == 0:
        return
    if k == 0 or m * n * k <= SMALL_GEMM_WORK:
        _small_gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
    else:
        _blas_gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)


cdef int threads_after_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int n_threads) noexcept nogil:
    # After a product that went to BLAS, BLAS's threads spin for a while waiting for more work,
    # and so would an OpenMP team started right after them: on 2 cores the two pools then fight.
    # A 2-thread epilogue after a 2-thread BLAS product doubled its time where a serial one cost
    # little (measured: see bench/README.md, OpenMP teams after BLAS calls);
    # OMP_WAIT_POLICY=passive also cured it, but is a process-wide setting for the user to make.
    # So the pass that follows a BLAS product stays on one thread, and BLAS alone threads the
    # gemm-shaped work, as bpcore/_network.pyx does for a whole step. Our own small loops run on
    # one thread, so after them the pass may use the team (its own threshold decides).
    if m * n * k > SMALL_GEMM_WORK:
        return 1
    return n_threads


def _gemm(bint trans_a, bint trans_b, double alpha, const floating[:, ::1] A,
          const floating[:, ::1] B, double beta, floating[:, ::1] C, str path="auto"):
    """C = alpha * op(A) @ op(B) + beta * C on C-contiguous, non-empty arrays.

    For the tests and the crossover benchmark: path "auto" is what the kernels use, "blas" and
    "own" force one side of the threshold. Shapes are the caller's responsibility.
    alpha and beta are Python floats (double) for both dtypes, as in the other entry points: a
    fused scalar argument would make Cython's dispatcher pick the double version for any Python
    float and then reject float32 arrays.
    """
    cdef floating a = <floating>alpha, bt = <floating>beta
    cdef Py_ssize_t m = C.shape[0], n = C.shape[1]
    cdef Py_ssize_t k = A.shape[0] if trans_a else A.shape[1]
    cdef int which = {"auto": 0, "blas": 1, "own": 2}[path]
    with nogil:
        if which == 0:
            gemm(trans_a, trans_b, m, n, k, a, &A[0, 0], A.shape[1], &B[0, 0], B.shape[1],
                 bt, &C[0, 0], C.shape[1])
        elif which == 1:
            _blas_gemm(trans_a, trans_b, m, n, k, a, &A[0, 0], A.shape[1], &B[0, 0],
                       B.shape[1], bt, &C[0, 0], C.shape[1])
        else:
            _small_gemm(trans_a, trans_b, m, n, k, a, &A[0, 0], A.shape[1], &B[0, 0],
                        B.shape[1], bt, &C[0, 0], C.shape[1])


SMALL_GEMM_THRESHOLD = SMALL_GEMM_WORK
