"""bpcore._blas._gemm: C = alpha op(A) @ op(B) + beta C on row-major arrays, through BLAS (the
transpose identity, no copy) and through our own loops, against NumPy.

As scikit-learn's BLAS tests do: alpha=2.5, beta=-0.5 (and beta=0, which must overwrite a C holding
NaN, as BLAS does), every transpose, both dtypes, and shapes on both sides of the own-loop threshold.
"""

import numpy as np
import pytest

from bpcore import _blas

from .conftest import assert_close

THRESHOLD = _blas.SMALL_GEMM_THRESHOLD

# (m, n, k): below the threshold (the own loops under "auto"), just above, and well above; and
# degenerate ones (1 x 1, a single column, k = 1); one row above it (a matrix-vector product).
SHAPES = [(1, 1, 1), (3, 1, 5), (1, 7, 1), (4, 2, 2), (5, 7, 3), (16, 16, 16), (17, 17, 17),
          (33, 40, 50), (64, 70, 3), (1, 40, 50), (1, 300, 70)]


def test_shapes_cover_both_sides_of_the_threshold():
    work = [m * n * k for m, n, k in SHAPES]
    assert min(work) <= THRESHOLD < max(work)
    assert any(w > THRESHOLD for w in work) and sum(w <= THRESHOLD for w in work) >= 3


def _operands(rng, dtype, trans_a, trans_b, m, n, k):
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    C = rng.standard_normal((m, n)).astype(dtype)
    return A, B, C


@pytest.mark.parametrize("path", ["auto", "blas", "own"])
@pytest.mark.parametrize("trans_a", [False, True], ids=["A", "A.T"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["B", "B.T"])
@pytest.mark.parametrize("beta", [-0.5, 0.0, 1.0])
@pytest.mark.parametrize("mnk", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_matches_numpy(rng, dtype, path, trans_a, trans_b, beta, mnk):
    m, n, k = mnk
    alpha = 2.5
    A, B, C = _operands(rng, dtype, trans_a, trans_b, m, n, k)
    opA = A.T if trans_a else A
    opB = B.T if trans_b else B
    A64, B64 = opA.astype(np.float64), opB.astype(np.float64)
    if beta == 0:
        C[...] = np.nan  # beta = 0 overwrites: whatever C held is never read
        expected = alpha * A64 @ B64
    else:
        expected = alpha * A64 @ B64 + beta * C.astype(np.float64)
    A_before, B_before = A.copy(), B.copy()
    _blas._gemm(trans_a, trans_b, alpha, A, B, beta, C, path)
    assert_close(C, expected, dtype, k=k * alpha**2, err_msg=f"path={path}")
    np.testing.assert_array_equal(A, A_before)
    np.testing.assert_array_equal(B, B_before)


@pytest.mark.parametrize("path", ["auto", "blas", "own"])
def test_gemm_read_only_operands(rng, dtype, path):
    # A and B are typed const in the kernel: read-only arrays (memmaps, broadcasts) are accepted.
    A, B, C = _operands(rng, dtype, False, True, 20, 30, 40)
    A.flags.writeable = False
    B.flags.writeable = False
    _blas._gemm(False, True, 1.0, A, B, 0.0, C, path)
    assert_close(C, A.astype(np.float64) @ B.T.astype(np.float64), dtype, k=40)


def test_auto_switches_at_the_threshold(rng, dtype):
    # "auto" is exactly the own loops up to THRESHOLD multiply-adds and exactly BLAS beyond; the two
    # agree to rounding there, so the switch is invisible to the kernels' callers.
    m, n = 4, 8
    k = THRESHOLD // (m * n)
    for kk, same_as in ((k, "own"), (k + 1, "blas")):
        A, B, C = _operands(rng, dtype, False, False, m, n, kk)
        out = {path: C.copy() for path in ("auto", "own", "blas")}
        for path, C_ in out.items():
            _blas._gemm(False, False, 2.5, A, B, -0.5, C_, path)
        assert m * n * kk <= THRESHOLD if same_as == "own" else m * n * kk > THRESHOLD
        np.testing.assert_array_equal(out["auto"], out[same_as])
        assert_close(out["own"], out["blas"], dtype, k=kk * 6.25)
