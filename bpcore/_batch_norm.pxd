from cython cimport floating

cdef void batch_norm_forward_core(const floating* z_in, Py_ssize_t n, Py_ssize_t m,
                                  const floating* gamma, const floating* beta, double eps,
                                  bint training, double momentum, floating* running,
                                  floating* xhat, double* stats, floating* z_out) noexcept nogil

cdef void batch_norm_backward_core(const floating* xhat, const double* stats, const floating* g,
                                   Py_ssize_t n, Py_ssize_t m, const floating* gamma,
                                   bint training, floating acc, floating* grad_gamma,
                                   floating* grad_beta, floating* g_prev) noexcept nogil
