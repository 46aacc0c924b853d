from cython cimport floating

cdef void dense_backward_core(const floating* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                              const floating* W, const floating* z_in, const floating* z_out,
                              Py_ssize_t n_out, int act, floating alpha, bint from_loss,
                              floating beta, floating* delta, floating* grad_W,
                              floating* grad_b, floating* g_prev, int n_threads) noexcept nogil

cdef int dense_backward_bf16_core(const float* z_out_prev, Py_ssize_t n, Py_ssize_t n_in,
                                  int path, const void* WT_packed, const float* z_in,
                                  const float* z_out, Py_ssize_t n_out, int act, float alpha,
                                  bint from_loss, float beta, float* delta, void* scratch,
                                  float* grad_W, float* grad_b, float* g_prev,
                                  int n_threads) noexcept nogil
