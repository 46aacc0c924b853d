"""Shared fixtures and the one tolerance table of the test suite.

Every comparison of a kernel with its NumPy twin goes through ``assert_close`` below, so the
tolerances live here and nowhere else.
"""

import contextlib

import numpy as np
import pytest

import bp
from bp import _passes

DTYPES = (np.float32, np.float64)

# Tolerances per dtype for "the same computation, rounded differently": the kernels and NumPy sum in
# different orders (BLAS blocks, own loops, pairwise sums) and call different libm builds.
#   float32: eps = 1.2e-7; a few ulps of rounding per operation give rtol 1e-5.
#   float64: eps = 2.2e-16; rtol 1e-12 leaves a margin of ~4500 ulps.
# atol covers results that cancel to near zero. It is scaled by sqrt(k), k the number of terms in
# the longest sum behind one entry (the inner dimension of a product, the rows of a column sum),
# because the entries we compare are sums of k terms of size ~1 whose rounding error grows like
# sqrt(k) (random-walk rounding).
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 1e-5, "atol": 1e-6},
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-12},
}


# bfloat16 products (bpcore._bf16, "mixed_bfloat16"): the oracle is the float64 product of the
# bf16-rounded operands (bp._reference.gemm_bf16), so the inputs' rounding is not an error and
# what is left is the float32 summation. Its error per entry is a few float32 eps (1.2e-7) times
# the sum of the absolute terms, whatever the sign cancellation, so the bound is relative to that
# magnitude, |alpha| |op(A)| @ |op(B)| + |beta C| (+ |bias|), not to the entry itself.
BF16_GEMM_RTOL = 1e-6


def assert_close_bf16(actual, desired, magnitude, err_msg=""):
    """|actual - desired| <= BF16_GEMM_RTOL * magnitude, entry by entry (float32 results)."""
    actual = np.asarray(actual)
    assert actual.dtype == np.float32, f"{err_msg}: dtype {actual.dtype}, expected float32"
    err = np.abs(actual.astype(np.float64) - desired)
    bad = ~(err <= BF16_GEMM_RTOL * magnitude)
    assert not bad.any(), (f"{err_msg}: {bad.sum()} of {bad.size} entries off by more than "
                           f"{BF16_GEMM_RTOL} x magnitude; worst relative error "
                           f"{np.max(err / np.maximum(magnitude, 1e-300)):.3g}")


def tol(dtype, k=1):
    """rtol/atol for a result of `dtype` whose entries are sums of about `k` terms of size ~1."""
    t = TOLERANCES[np.dtype(dtype)]
    return {"rtol": t["rtol"], "atol": t["atol"] * max(1.0, float(k)) ** 0.5}


def assert_close(actual, desired, dtype, k=1, err_msg=""):
    """The kernel's result has `dtype` and matches the oracle within tol(dtype, k)."""
    actual = np.asarray(actual)
    assert actual.dtype == np.dtype(dtype), f"{err_msg}: dtype {actual.dtype}, expected {dtype}"
    np.testing.assert_allclose(actual, desired, err_msg=err_msg, **tol(dtype, k))


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Tests may change bp's thread setting; none leaks into the next test."""
    with bp.num_threads(bp._threads._n_threads):
        yield


@contextlib.contextmanager
def python_twin(on=True):
    """Models built inside run their backward pass as the per-layer Python twin (on=True) instead
    of the compiled engine (on=False leaves bp's default). The one place the tests reach for the
    switch (``Passes.compiled``), so that a test compares the two paths without knowing it."""
    if not on:
        yield
        return
    init = _passes.Passes.__init__

    def on_twin(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.compiled = False

    _passes.Passes.__init__ = on_twin
    try:
        yield
    finally:
        _passes.Passes.__init__ = init


@pytest.fixture(params=[True, False])
def compiled(request):
    """The test runs twice: on the compiled engine (True) and on the Python twin (False), which
    every model built during the test then uses."""
    with python_twin(on=not request.param):
        yield request.param


def layouts(a):
    """The same values as `a` (2-D) in the memory layouts a caller may hand us."""
    c = np.ascontiguousarray(a)
    ro = c.copy()
    ro.flags.writeable = False
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    wide[:, ::2] = a  # a column-strided view
    tall = np.zeros((2 * a.shape[0], a.shape[1]), a.dtype)
    tall[::2] = a  # a row-strided view
    return {
        "C": c,
        "F": np.asfortranarray(a),
        "rows[::2]": tall[::2],
        "cols[:, ::2]": wide[:, ::2],
        "read-only": ro,
    }


LAYOUTS = ("C", "F", "rows[::2]", "cols[:, ::2]", "read-only")
