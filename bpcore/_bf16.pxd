# bp's bfloat16 matrix product (see _bf16.pyx for the design, _bf16_gemm.h for the kernel).
#
# C = alpha * op(A) @ op(B) + beta * C, then + bias[j] and the activation `act` (the fused
# epilogue), on row-major float32 arrays with row strides lda, ldb, ldc: the products of
# bf16-rounded inputs, accumulated in float32. All entries return 0, or -1 if scratch memory could
# not be allocated (the caller raises MemoryError once it holds the GIL again).

cdef enum:
    BF16_PATH_FALLBACK = 0     # sgemm on bf16-rounded float32 copies (any CPU)
    BF16_PATH_AVX512 = 1       # vdpbf16ps, bp's packed 8 x 32 kernel
    BF16_PATH_AMX = 2          # reserved
    BF16_PATH_ARM_BFMMLA = 3   # reserved
    BF16_ACT_NONE = 0
    BF16_ACT_RELU = 1

# The path this process runs (the CPU's best unless forced to the fallback).
cdef int active_path() noexcept nogil

# 64-byte aligned memory for packed operands (free_packed releases it; NULL if out of memory).
cdef void* alloc_packed(size_t nbytes) noexcept nogil
cdef void free_packed(void* p) noexcept nogil

# A weight kept packed between updates: `packed` holds packed_b_bytes(path, k, n) bytes (64-byte
# alignment is best, any works) and is only valid for the `path` it was packed for.
# op(B) is k x n: B itself (W, for z_out_prev @ W) or, with trans_b, B.T (W.T, for delta @ W.T).
cdef size_t packed_b_bytes(int path, Py_ssize_t k, Py_ssize_t n) noexcept nogil
cdef int pack_b(int path, bint trans_b, Py_ssize_t k, Py_ssize_t n,
                const float* B, Py_ssize_t ldb,      # IN
                void* packed,                        # OUT
                int n_threads) noexcept nogil
cdef int gemm_packed(int path, bint trans_a, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     float alpha, const float* A, Py_ssize_t lda, const void* packed_B,  # IN
                     float beta, float* C, Py_ssize_t ldc,                             # OUT
                     const float* bias, int act,                                       # epilogue
                     int n_threads) noexcept nogil

# The same with op(B) packed on the fly (on the active path): z_out_prev.T @ delta.
cdef int gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
              float alpha, const float* A, Py_ssize_t lda,
              const float* B, Py_ssize_t ldb,                  # IN
              float beta, float* C, Py_ssize_t ldc,            # OUT
              const float* bias, int act,
              int n_threads) noexcept nogil
