from cython cimport floating

# The metrics' state updates (bpcore/_metrics.pyx), declared for the compiled epoch to cimport:
# it calls them after each micro-batch's backward pass on the f_out it caches (bench/README.md,
# "Metrics", says where and with what). w may be NULL (unweighted); the states are float64.

cdef void confusion_core(const floating* f_out, const floating* Y, const floating* w,
                         Py_ssize_t n, Py_ssize_t m, bint binary, double threshold,
                         double* C) noexcept nogil

cdef void top_k_core(const floating* f_out, const floating* Y, const floating* w,
                     Py_ssize_t n, Py_ssize_t m, Py_ssize_t k, double* hits) noexcept nogil

cdef void error_core(const floating* f_out, const floating* Y, const floating* w,
                     Py_ssize_t n, Py_ssize_t m, double* S) noexcept nogil

cdef void auc_core(const floating* f_out, const floating* Y, const floating* w,
                   Py_ssize_t n, Py_ssize_t m, bint one_vs_rest, Py_ssize_t n_bins,
                   double* H) noexcept nogil
