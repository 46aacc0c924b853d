from cython cimport floating

cdef void sgd_core(const floating* grad, Py_ssize_t n, floating lr, floating momentum,
                   bint nesterov, floating weight_decay, floating grad_scale,
                   floating* param, floating* velocity, int n_threads) noexcept nogil

cdef void adam_core(const floating* grad, Py_ssize_t n, floating lr, floating beta1,
                    floating beta2, floating eps, floating weight_decay, bint decoupled,
                    long step, floating grad_scale, floating* param, floating* m, floating* v,
                    int n_threads) noexcept nogil

cdef void rmsprop_core(const floating* grad, Py_ssize_t n, floating lr, floating rho,
                       floating eps, floating weight_decay, floating momentum,
                       floating grad_scale, floating* param, floating* sq, floating* gavg,
                       floating* buf, int n_threads) noexcept nogil

cdef void adagrad_core(const floating* grad, Py_ssize_t n, floating lr, floating eps,
                       floating weight_decay, floating grad_scale, floating* param,
                       floating* acc, int n_threads) noexcept nogil

cdef void nadam_core(const floating* grad, Py_ssize_t n, floating beta1, floating beta2,
                     floating eps, floating weight_decay, double c_grad, double c_m, long step,
                     floating grad_scale, floating* param, floating* m, floating* v,
                     int n_threads) noexcept nogil

cdef double sum_of_squares_core(const floating* x, Py_ssize_t n, int n_threads) noexcept nogil

cdef void sums_of_squares_core(const floating* x, const floating* y, Py_ssize_t n,
                               double* sx, double* sy, int n_threads) noexcept nogil

# scikit-learn's MLP updates (bp.sklearn)
cdef enum:
    SKLEARN_SGD = 1
    SKLEARN_ADAM = 2

cdef double sklearn_update_core(int kind, const floating* grad, const Py_ssize_t* bounds,
                                Py_ssize_t n_bounds, floating l2, floating lr,
                                floating momentum, bint nesterov, floating beta1,
                                floating beta2, floating eps, floating* param, floating* s1,
                                floating* s2, int n_threads) noexcept nogil
