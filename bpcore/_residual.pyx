# A residual connection (bp.Residual): the block's input z_skip is added to its output.
#
#     forward    z_out = z_block + z_skip
#     backward   g_block = g                    the block's last operation receives g unchanged
#                g_skip  = g_first + g          where the block begins, the skip's g is added to
#                                               the error signal the block's first operation
#                                               sends back (g_first)
#
# So the engine has two operations per block: a fork where it begins (forward: the identity;
# backward: add_core(g_first, g_add)) and the add where it ends (forward: add_core; backward: a
# copy of g into the block's last operation). One elementwise sum, serial (a stream of additions:
# threads would not pay after the products around it, see _network.pyx's header).


cdef void add_core(const floating* a, const floating* b, Py_ssize_t count,
                   floating* out) noexcept nogil:
    """out = a + b (count elements)."""
    cdef Py_ssize_t i
    for i in range(count):
        out[i] = a[i] + b[i]


def add(const floating[:, ::1] a, const floating[:, ::1] b,  # IN
        floating[:, ::1] out):  # OUT
    """out = a + b. Inputs are validated by the caller."""
    if a.shape[0] == 0:
        return
    with nogil:
        add_core(&a[0, 0], &b[0, 0], a.shape[0] * a.shape[1], &out[0, 0])
