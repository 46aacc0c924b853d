from cython cimport floating

cdef void dense_backward_core(const floating* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                              const floating* W, const floating* z_in, const floating* z_out,
                              Py_ssize_t n_out, int act, floating alpha, bint from_loss,
                              floating beta, floating* delta, floating* grad_W,
                              floating* grad_b, floating* g_prev, int n_threads) noexcept nogil
