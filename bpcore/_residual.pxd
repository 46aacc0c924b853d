from cython cimport floating

cdef void add_core(const floating* a, const floating* b, Py_ssize_t count,
                   floating* out) noexcept nogil
