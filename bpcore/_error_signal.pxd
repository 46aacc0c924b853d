from cython cimport floating

cdef void output_delta_core(const floating* f_in, const floating* f_out, const floating* y,
                            const floating* sample_weight, Py_ssize_t n, Py_ssize_t m,
                            int loss, int tau, floating alpha, floating scale,
                            floating* delta, int n_threads) noexcept nogil

cdef void hidden_delta_core(const floating* delta_next, Py_ssize_t n, Py_ssize_t m_next,
                            const floating* W_next, const floating* z_in, const floating* z_out,
                            Py_ssize_t m, int act, floating alpha,
                            floating* delta, int n_threads) noexcept nogil
