from cython cimport floating

# Row-major matrix product C = alpha * op(A) @ op(B) + beta * C, with op(X) = X or X.T.
# See _blas.pyx for how it reaches a column-major BLAS with no copy, and when it does not call BLAS.
cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* A, Py_ssize_t lda,
               const floating* B, Py_ssize_t ldb,
               floating beta, floating* C, Py_ssize_t ldc) noexcept nogil


# The threads for an elementwise pass right after gemm(m, n, k) (see _blas.pyx).
cdef int threads_after_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int n_threads) noexcept nogil
