from cython cimport floating

cdef double penalty_core(const floating* W, Py_ssize_t n, double l1, double l2, floating* grad_W,
                         int n_threads) noexcept nogil
