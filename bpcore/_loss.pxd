from cython cimport floating

# Loss codes (bpcore.LOSSES maps the names; _loss.pyx's header has the formulas).
cdef enum:
    MSE = 0
    BINARY_CROSS_ENTROPY = 1
    CROSS_ENTROPY = 2
    MAE = 3
    HUBER = 4
    POISSON = 5

cdef double loss_core(const floating* f_in, const floating* f_out, const floating* y,
                      const floating* sample_weight, Py_ssize_t n, Py_ssize_t m,
                      int loss, double scale, floating* per_sample,
                      int n_threads) noexcept nogil

cdef double clipped_log_loss_core(const floating* f_out, const floating* Y, const floating* w,
                                  Py_ssize_t n, Py_ssize_t m, int loss, double sw,
                                  double value) noexcept nogil
