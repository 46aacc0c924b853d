# Inverted dropout on a layer's output, and its pass in the error signal.
#
#     forward    mask[r, j] = keep(seed, draw, r, j);  z_drop = z_out * mask / (1 - rate)
#     backward   g_prev = g * mask / (1 - rate)      g = dL/dz_drop, g_prev = dL/dz_out
#                (as an operation of the engine: dropout_backward_into_core, from the Dropout's
#                own error-signal buffer into the previous operation's; the Dense before it then
#                multiplies its sigma' in: delta[i] = ((delta[i+1] @ W[i+1].T) * mask / (1 - rate))
#                * sigma'(z_in[i]). dropout_backward_core is the same product in place.)
#
# The masks come from a counter-based generator: keep(r, j) is a pure function of (seed, draw,
# row, unit), draw counting the training batches (bp: optimizer step x accumulate + micro-batch).
# No generator state moves between elements, so any split of the rows over threads gives the same
# bits, and a step can be replayed. The hash is splitmix64's finalizer (Steele, Lea, Flood 2014),
# keyed by the batch, then the row, then the pair of units (2j, 2j + 1): its low 32 bits decide
# unit 2j, its high 32 bits unit 2j + 1, each kept when its 32 bits are >= floor(rate 2^32) (one
# 64-bit hash per two units: the hash is most of the pass's cost). Masks are bytes (0/1), not
# floats: an eighth of the memory of a float64 mask, read once in each pass.

from cython.parallel cimport prange

from bpcore._openmp cimport COST_STREAM, work_threads

cdef u64 GOLDEN = 0x9E3779B97F4A7C15ULL


cdef inline u64 _mix(u64 z) noexcept nogil:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline void _forward_row(const floating* z_out, Py_ssize_t r, Py_ssize_t units, u64 key,
                              u64 threshold, floating scale, unsigned char* mask,
                              floating* z_drop) noexcept nogil:
    # a pair of units per hash, the pairs independent of each other (a loop over units that
    # hashed on even j and shifted on odd j carried h from one unit to the next, and ran 1.6x
    # slower)
    cdef Py_ssize_t p, j, o = r * units
    cdef u64 row_key = _mix(key + <u64>(r + 1) * GOLDEN)
    cdef u64 h
    for p in range(units // 2):
        h = _mix(row_key + <u64>(p + 1) * GOLDEN)
        mask[o + 2 * p] = (h & 0xFFFFFFFFULL) >= threshold
        mask[o + 2 * p + 1] = (h >> 32) >= threshold
    if units % 2:
        h = _mix(row_key + <u64>(units // 2 + 1) * GOLDEN)
        mask[o + units - 1] = (h & 0xFFFFFFFFULL) >= threshold
    # then the row through its mask, a loop of its own that vectorises (no branch: keep is 0
    # or 1 at random)
    for j in range(o, o + units):
        z_drop[j] = z_out[j] * (scale * mask[j])


cdef void dropout_forward_core(const floating* z_out, Py_ssize_t n, Py_ssize_t units, u64 seed,
                               u64 draw, u64 threshold, floating scale, unsigned char* mask,
                               floating* z_drop, int n_threads) noexcept nogil:
    """mask (n x units bytes) and z_drop = z_out * mask * scale for batch `draw`."""
    cdef Py_ssize_t r
    cdef u64 key = _mix(seed ^ _mix((draw + 1) * GOLDEN))
    cdef int nt = work_threads(n * units * COST_STREAM, n, n_threads)
    if nt == 1:
        for r in range(n):
            _forward_row(z_out, r, units, key, threshold, scale, mask, z_drop)
    else:
        for r in prange(n, num_threads=nt, schedule="static"):
            _forward_row(z_out, r, units, key, threshold, scale, mask, z_drop)


cdef void dropout_backward_core(const unsigned char* mask, Py_ssize_t count, floating scale,
                                floating* delta, int n_threads) noexcept nogil:
    """delta *= mask * scale (count elements)."""
    cdef Py_ssize_t i
    cdef int nt = work_threads(count * COST_STREAM, count, n_threads)
    if nt == 1:
        for i in range(count):
            delta[i] = delta[i] * (scale * mask[i])
    else:
        for i in prange(count, num_threads=nt, schedule="static"):
            delta[i] = delta[i] * (scale * mask[i])


cdef void dropout_backward_into_core(const unsigned char* mask, const floating* g,
                                     Py_ssize_t count, floating scale, floating* g_prev,
                                     int n_threads) noexcept nogil:
    """g_prev = g * mask * scale (count elements)."""
    cdef Py_ssize_t i
    cdef int nt = work_threads(count * COST_STREAM, count, n_threads)
    if nt == 1:
        for i in range(count):
            g_prev[i] = g[i] * (scale * mask[i])
    else:
        for i in prange(count, num_threads=nt, schedule="static"):
            g_prev[i] = g[i] * (scale * mask[i])


def threshold(double rate):
    """The integer a unit's 32 hash bits must reach to be kept: floor(rate * 2^32)."""
    return int(rate * 4294967296.0)


def dropout_forward(const floating[:, ::1] z_out,  # IN
                    u64 seed, u64 draw, double rate,
                    unsigned char[:, ::1] mask, floating[:, ::1] z_drop,  # OUT
                    int n_threads):
    """Inverted dropout of z_out for training batch `draw`: mask (bytes) and
    z_drop = z_out * mask / (1 - rate)."""
    if z_out.shape[0] == 0 or z_out.shape[1] == 0:
        return
    cdef u64 thr = threshold(rate)
    cdef floating scale = <floating>(1.0 / (1.0 - rate))
    with nogil:
        dropout_forward_core(&z_out[0, 0], z_out.shape[0], z_out.shape[1], seed, draw, thr,
                             scale, &mask[0, 0], &z_drop[0, 0], n_threads)


def dropout_backward(const unsigned char[:, ::1] mask,  # IN
                     double rate,
                     floating[:, ::1] delta,  # IN/OUT
                     int n_threads):
    """delta *= mask / (1 - rate): the error signal through the mask of the forward pass."""
    if delta.shape[0] == 0 or delta.shape[1] == 0:
        return
    cdef floating scale = <floating>(1.0 / (1.0 - rate))
    with nogil:
        dropout_backward_core(&mask[0, 0], delta.shape[0] * delta.shape[1], scale, &delta[0, 0],
                              n_threads)


def dropout_backward_into(const unsigned char[:, ::1] mask,  # IN
                          const floating[:, ::1] g,  # IN
                          double rate,
                          floating[:, ::1] g_prev,  # OUT
                          int n_threads):
    """g_prev = g * mask / (1 - rate): the Dropout operation's backward pass."""
    if g.shape[0] == 0 or g.shape[1] == 0:
        return
    cdef floating scale = <floating>(1.0 / (1.0 - rate))
    with nogil:
        dropout_backward_into_core(&mask[0, 0], &g[0, 0], g.shape[0] * g.shape[1], scale,
                                   &g_prev[0, 0], n_threads)
