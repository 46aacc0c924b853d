# Inference: the forward pass of a whole network for predict, in one nogil call.
#
#     for each block of rows r:   z = X[r]
#                                 for each layer:  z = sigma(z @ W + b)      (dense_forward_core)
#                                 out[r] = z
#
# Why one call: a Python loop over layers pays argument parsing, memoryviews and the GIL per kernel
# call, several times the arithmetic of one row through a small network (measured: see
# bench/README.md, One compiled call instead of a loop over layers). Here the
# model's layer table and parameter pointer are set up once (``Inference(params, table)``, cached
# by bp._passes) and a call checks X and out through NumPy's C API in well under a microsecond.
#
# Why blocks of rows: predict needs no cached z_in or z_out, so the activations of a block of
# rows go through every layer in two small buffers that stay in cache (ping-pong), and the last
# layer writes into out. Without blocks each layer's (n, width) activations are written to memory
# and read back, and fresh buffers are touched for the first time (page faults) on every call.
#
# Threads: with n threads, the calling thread and n - 1 helpers from a thread pool (bp._passes)
# take blocks from a shared atomic counter, each with BLAS on one thread (the caller holds the
# BLAS pools to one) and buffers of its own, and the call returns when every block is done. It
# never waits for a helper that has not started: one that starts late finds no block left. Not
# an OpenMP team: its barrier waits for every member to arrive, and on a busy 2-core machine the
# second thread is often not running (measured: see bench/README.md, OpenMP teams after BLAS
# calls); nor
# BLAS-threaded products, one block after another, which wait on BLAS's workers at every product
# (and an OpenMP epilogue between BLAS calls fights BLAS's spinning threads: _blas.pyx,
# threads_after_gemm). The caller picks the block size and the threads (bp._passes.Passes.predict).
#
# Several Python threads may call run() at once on one Inference: each call and each helper
# allocates its own two block buffers; the parameters are only read.

from cython cimport floating
from libc.stdlib cimport malloc, free
from libc.math cimport isfinite

from bpcore._dense_forward cimport dense_forward_core

import numpy as np
cimport numpy as cnp

cnp.import_array()


# Atomic counters and a yield, for blocks shared between threads.
cdef extern from *:
    """
    #if defined(_MSC_VER)
      #include <windows.h>
      static long long bp_fetch_add(long long* p, long long v) {
          return InterlockedExchangeAdd64(p, v);
      }
      static long long bp_load(long long* p) { return InterlockedCompareExchange64(p, 0, 0); }
      static void bp_yield(void) { SwitchToThread(); }
    #else
      #include <sched.h>
      static long long bp_fetch_add(long long* p, long long v) {
          return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
      }
      static long long bp_load(long long* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
      static void bp_yield(void) { sched_yield(); }
    #endif
    """
    long long bp_fetch_add(long long* p, long long v) noexcept nogil
    long long bp_load(long long* p) noexcept nogil
    void bp_yield() noexcept nogil


cdef struct Layer:
    Py_ssize_t n_in, n_out, w_off, b_off   # b_off < 0: no bias
    int act
    double alpha


cdef Py_ssize_t _first_non_finite(const floating* X, Py_ssize_t size) noexcept nogil:
    """The index of the first NaN or infinity in X[:size], or -1. x - x is 0 for a finite x and
    NaN otherwise; or-ing the comparisons into an int is a reduction gcc vectorises (a float sum
    is not: without -ffast-math its order is fixed, one add after another). Only when there is
    one is the index looked for."""
    cdef Py_ssize_t i
    cdef int bad = 0
    for i in range(size):
        bad |= (X[i] - X[i]) != 0
    if not bad:
        return -1
    for i in range(size):
        if not isfinite(X[i]):
            return i
    return -1


cdef void _forward_block(const Layer* layers, Py_ssize_t n_layers, const floating* params,
                         const floating* X, Py_ssize_t start, Py_ssize_t rows, floating* f_in,
                         floating* out, floating* buf_a, floating* buf_b) noexcept nogil:
    """Rows start .. start + rows through every layer: hidden activations in buf_a and buf_b in
    turn, the last layer into out (and its z_in into f_in when not NULL)."""
    cdef Py_ssize_t i
    cdef const floating* z_prev = X + start * layers[0].n_in
    cdef floating* z_in
    cdef floating* z_next
    cdef const Layer* L
    for i in range(n_layers):
        L = &layers[i]
        if i == n_layers - 1:
            z_next = out + start * L.n_out
            z_in = z_next if f_in == NULL else f_in + start * L.n_out
        else:
            z_next = z_in = buf_a if i % 2 == 0 else buf_b
        # with z_in and z_out one buffer, sigma is applied in place; one thread: BLAS is held
        # to one by the caller, and the epilogue after a BLAS product stays serial anyway
        dense_forward_core(z_prev, rows, L.n_in, L.n_in, params + L.w_off,
                           NULL if L.b_off < 0 else params + L.b_off, L.n_out, L.act,
                           <floating>L.alpha, z_in, z_next, 1)
        z_prev = z_next


cdef void _claim_blocks(const Layer* layers, Py_ssize_t n_layers, const floating* params,
                        const floating* X, Py_ssize_t n, floating* f_in, floating* out,
                        Py_ssize_t block, floating* buf_a, floating* buf_b, long long* state,
                        bint wait) noexcept nogil:
    """Take blocks of rows until none is left: state[0] is the next block to take, state[1] the
    blocks finished. The caller (wait=True) then waits for the blocks others took to finish;
    a helper that starts late finds nothing left and returns at once."""
    cdef long long n_blocks = (n + block - 1) // block, k
    while True:
        k = bp_fetch_add(&state[0], 1)
        if k >= n_blocks:
            break
        _forward_block(layers, n_layers, params, X, k * block, min(block, n - k * block), f_in,
                       out, buf_a, buf_b)
        bp_fetch_add(&state[1], 1)
    while wait and bp_load(&state[1]) < n_blocks:
        bp_yield()


cdef class Inference:
    """The forward pass of one model for prediction (see the file header).

    Inference(params, layers): the model's flat parameter buffer (float32 or float64) and, per
    Dense layer, (n_in, n_out, activation code, alpha, w_offset, b_offset or -1).
    """

    cdef Layer* layers
    cdef Py_ssize_t n_layers, width
    cdef readonly Py_ssize_t n_in, n_out
    cdef int typenum
    cdef readonly object params
    cdef const void* p

    def __cinit__(self, params, layers):
        self.layers = NULL

    def __init__(self, params, layers):
        cdef Py_ssize_t i, need = 0
        if not cnp.PyArray_Check(params) or params.dtype not in (np.float32, np.float64) \
                or params.ndim != 1 or not params.flags.c_contiguous:
            raise TypeError("params must be a 1-D C-contiguous float32 or float64 numpy array")
        self.typenum = cnp.NPY_FLOAT64 if params.dtype == np.float64 else cnp.NPY_FLOAT32
        self.params = params
        self.p = cnp.PyArray_DATA(<cnp.ndarray>params)
        self.n_layers = len(layers)
        if self.n_layers == 0:
            raise ValueError("an Inference needs at least one layer")
        self.layers = <Layer*>malloc(self.n_layers * sizeof(Layer))
        if self.layers == NULL:
            raise MemoryError()
        self.width = 1
        for i, (n_in, n_out, act, alpha, w_off, b_off) in enumerate(layers):
            self.layers[i].n_in, self.layers[i].n_out = n_in, n_out
            self.layers[i].act, self.layers[i].alpha = act, alpha
            self.layers[i].w_off, self.layers[i].b_off = w_off, b_off
            if i > 0 and n_in != self.layers[i - 1].n_out:
                raise ValueError(f"layer {i} has n_in={n_in}, the previous layer n_out="
                                 f"{self.layers[i - 1].n_out}")
            if i < self.n_layers - 1:
                self.width = max(self.width, n_out)
            need = max(need, w_off + n_in * n_out, b_off + n_out)
        if need > params.shape[0]:
            raise ValueError(f"the layout needs {need} parameters; "
                             f"the buffer has {params.shape[0]}")
        self.n_in, self.n_out = self.layers[0].n_in, self.layers[self.n_layers - 1].n_out

    def __dealloc__(self):
        free(self.layers)

    def ready(self, X):
        """True if X is a non-empty C-contiguous 2-D ndarray of the dtype and the input width
        (whether it is finite, run() checks)."""
        return self._ready(X)

    cdef bint _ready(self, object X):
        cdef cnp.ndarray arr
        if not cnp.PyArray_CheckExact(X):
            return False
        arr = <cnp.ndarray>X
        return (cnp.PyArray_TYPE(arr) == self.typenum and cnp.PyArray_NDIM(arr) == 2
                and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_DIM(arr, 1) == self.n_in
                and cnp.PyArray_DIM(arr, 0) > 0)

    def run(self, X, out, Py_ssize_t block_rows, int n_threads, f_in=None, submit=None):
        """f_out of every row of X, written into out (a new array when out is None) and returned;
        the last layer's z_in (f_in, which the losses need) also into f_in when it is given.

        Returns None, computing nothing, when X is not a non-empty C-contiguous ndarray of the
        dtype and input width with every entry finite: the caller then checks and converts it
        (bp._passes.check_X, which names what is wrong) and calls again. out and f_in, when
        given, must already be checked by the caller (shape, dtype, C order, writeable, not
        overlapping X or each other).

        With n_threads > 1, ``submit(fn, *args)`` (a thread pool's) runs n_threads - 1 helpers
        that take blocks beside this thread; this call returns when every block is done,
        without waiting for a helper that never got to start.
        """
        cdef Py_ssize_t n, bad, helpers
        cdef void* x
        cdef long long alone[2]
        cdef bint is_double = self.typenum == cnp.NPY_FLOAT64
        cdef cnp.npy_intp dims[2]
        if not self._ready(X):
            return None
        n = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
        x = cnp.PyArray_DATA(<cnp.ndarray>X)
        with nogil:
            if is_double:
                bad = _first_non_finite(<const double*>x, n * self.n_in)
            else:
                bad = _first_non_finite(<const float*>x, n * self.n_in)
        if bad >= 0:
            return None
        if out is None:
            dims[0], dims[1] = n, self.n_out
            out = cnp.PyArray_EMPTY(2, dims, self.typenum, 0)
        block_rows = max(1, min(block_rows, n))
        helpers = min(n_threads, (n + block_rows - 1) // block_rows) - 1
        if helpers <= 0:
            alone[0] = alone[1] = 0
            self._go(x, out, f_in, n, block_rows, alone, True)
            return out
        state = np.zeros(2, np.int64)
        for _ in range(helpers):
            submit(self._blocks, X, out, f_in, block_rows, state, False)
        self._blocks(X, out, f_in, block_rows, state, True)
        return out

    def _blocks(self, X, out, f_in, Py_ssize_t block_rows, cnp.ndarray state, bint wait):
        """_go for a thread of the pool (X, out and f_in were checked by run())."""
        self._go(cnp.PyArray_DATA(<cnp.ndarray>X), out, f_in, cnp.PyArray_DIM(<cnp.ndarray>X, 0),
                 block_rows, <long long*>cnp.PyArray_DATA(state), wait)

    cdef int _go(self, const void* x, out, f_in, Py_ssize_t n, Py_ssize_t block_rows,
                 long long* st, bint wait) except -1:
        """Blocks of rows through the network until none is left (_claim_blocks), with two
        buffers of this call's own."""
        cdef void* o = cnp.PyArray_DATA(<cnp.ndarray>out)
        cdef void* fi = NULL if f_in is None else cnp.PyArray_DATA(<cnp.ndarray>f_in)
        cdef bint is_double = self.typenum == cnp.NPY_FLOAT64
        cdef size_t item = sizeof(double) if is_double else sizeof(float)
        cdef void* buf = malloc(2 * block_rows * self.width * item)
        if buf == NULL:
            raise MemoryError()
        with nogil:
            if is_double:
                _claim_blocks(self.layers, self.n_layers, <const double*>self.p,
                              <const double*>x, n, <double*>fi, <double*>o, block_rows,
                              <double*>buf, <double*>buf + block_rows * self.width, st, wait)
            else:
                _claim_blocks(self.layers, self.n_layers, <const float*>self.p,
                              <const float*>x, n, <float*>fi, <float*>o, block_rows,
                              <float*>buf, <float*>buf + block_rows * self.width, st, wait)
        free(buf)
        return 0
