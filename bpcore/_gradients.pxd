from cython cimport floating

cdef void gradients_core(const floating* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                         Py_ssize_t ld_prev, const floating* delta, Py_ssize_t n_out,
                         floating beta, floating* grad_W, floating* grad_b,
                         int n_threads) noexcept nogil

cdef void column_sums(const floating* delta, Py_ssize_t n, Py_ssize_t m, floating beta,
                      floating* out, int n_threads) noexcept nogil
