from cython cimport floating

ctypedef unsigned long long u64

cdef void dropout_forward_core(const floating* z_out, Py_ssize_t n, Py_ssize_t units, u64 seed,
                               u64 draw, u64 threshold, floating scale, unsigned char* mask,
                               floating* z_drop, int n_threads) noexcept nogil

cdef void dropout_backward_core(const unsigned char* mask, Py_ssize_t count, floating scale,
                                floating* delta, int n_threads) noexcept nogil

cdef void dropout_backward_into_core(const unsigned char* mask, const floating* g,
                                     Py_ssize_t count, floating scale, floating* g_prev,
                                     int n_threads) noexcept nogil
