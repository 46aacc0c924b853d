from cython cimport floating

cdef void layer_norm_forward_core(const floating* z_in, Py_ssize_t n, Py_ssize_t m,
                                  const floating* gamma, const floating* beta, double eps,
                                  floating* xhat, double* rstd, floating* z_out,
                                  int n_threads) noexcept nogil

cdef void layer_norm_backward_core(const floating* xhat, const double* rstd, const floating* g,
                                   Py_ssize_t n, Py_ssize_t m, const floating* gamma,
                                   floating acc, floating* grad_gamma, floating* grad_beta,
                                   floating* g_prev, int n_threads) noexcept nogil

cdef void norm_column_sums(const floating* g, const floating* xhat, Py_ssize_t n, Py_ssize_t m,
                           floating acc, floating* grad_gamma, floating* grad_beta) noexcept nogil

cdef void _scale_shift(const floating* xhat, Py_ssize_t m, const floating* gamma,
                       const floating* beta, floating* y) noexcept nogil
