from cython cimport floating

cdef void dense_forward_core(const floating* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                             Py_ssize_t ld_prev, const floating* W, const floating* b,
                             Py_ssize_t n_out, int act, floating alpha,
                             floating* z_in, floating* z_out, int n_threads) noexcept nogil

cdef int dense_forward_bf16_core(const float* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                                 Py_ssize_t ld_prev, int path, const void* W_packed,
                                 const float* b, Py_ssize_t n_out, int act, float alpha,
                                 float* z_in, float* z_out, int n_threads) noexcept nogil
