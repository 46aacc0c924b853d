from cython cimport floating

cdef void activation_forward_core(const floating* z_in, Py_ssize_t n, Py_ssize_t m, int act,
                                  floating alpha, floating* z_out, int n_threads) noexcept nogil

cdef void activation_backward_core(const floating* z_in, const floating* z_out,
                                   const floating* g, Py_ssize_t n, Py_ssize_t m, int act,
                                   floating alpha, floating* g_prev, int n_threads) noexcept nogil
