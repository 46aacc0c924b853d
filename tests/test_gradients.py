"""bp.kernels.gradients: grad_W = beta grad_W + z_out_prev.T @ delta, grad_b = beta grad_b +
sum_i delta_i, against the NumPy twin."""

import numpy as np
import pytest

import bp
from bp import _reference as R
from bp import kernels as K
from bpcore import _openmp

from .conftest import LAYOUTS, assert_close, layouts

BATCHES = (1, 7, 33, 300)
# (n_in, n_out): grad_W's product has work n_in * n_out * n: (3, 4) is below the own-loop
# threshold for the small batches, (40, 50) above it for every batch.
LAYERS = ((3, 4), (40, 50))


def _data(rng, dtype, n, n_in, n_out):
    return (rng.standard_normal((n, n_in)).astype(dtype),
            rng.standard_normal((n, n_out)).astype(dtype))


def _wide(rng, dtype):
    """delta with n * n_out above the parallel threshold and several 64-column blocks."""
    n = 300
    n_out = max(2 * _openmp.min_parallel_work() // n + 1, 3 * 64 + 5)
    return _data(rng, dtype, n, 8, n_out)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("n_in, n_out", LAYERS)
def test_matches_reference(rng, dtype, n, n_in, n_out):
    x, delta = _data(rng, dtype, n, n_in, n_out)
    gW, gb = K.gradients(x, delta)
    rW, rb = R.gradients(x, delta)
    assert_close(gW, rW, dtype, k=n)
    assert_close(gb, rb, dtype, k=n)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("n_in, n_out", LAYERS)
@pytest.mark.parametrize("beta", (0.0, 1.0, 2.5))
def test_into_buffers(rng, dtype, n, n_in, n_out, beta):
    # beta = 0 overwrites (the NaN in the buffers is never read); beta != 0 accumulates.
    x, delta = _data(rng, dtype, n, n_in, n_out)
    if beta == 0:
        gW, gb = np.full((n_in, n_out), np.nan, dtype), np.full(n_out, np.nan, dtype)
    else:
        gW = rng.standard_normal((n_in, n_out)).astype(dtype)
        gb = rng.standard_normal(n_out).astype(dtype)
    rW, rb = R.gradients(x, delta, beta, gW.copy(), gb.copy())
    rW_, rb_ = K.gradients(x, delta, beta, gW, gb)
    assert rW_ is gW and rb_ is gb
    assert_close(gW, rW, dtype, k=n + beta**2)
    assert_close(gb, rb, dtype, k=n + beta**2)


def test_no_bias(rng, dtype):
    x, delta = _data(rng, dtype, 33, 40, 50)
    gW, gb = K.gradients(x, delta, use_bias=False)
    assert gb is None
    assert_close(gW, R.gradients(x, delta, use_bias=False)[0], dtype, k=33)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_in, n_out", LAYERS)
def test_input_layouts(rng, dtype, layout, n_in, n_out):
    x, delta = _data(rng, dtype, 33, n_in, n_out)
    expected = K.gradients(x, delta)
    got = K.gradients(layouts(x)[layout], layouts(delta)[layout])
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("beta", (0.0, 1.0))
def test_grad_b_sums_rows_in_order(rng, dtype, beta):
    # The kernel sums each column over the rows in row order, in the input dtype; so does this loop,
    # to the bit (no FMA or reassociation can enter a chain of plain additions).
    x, delta = _wide(rng, dtype)
    start = rng.standard_normal(delta.shape[1]).astype(dtype)
    acc = np.zeros(delta.shape[1], dtype)
    for row in delta:
        acc = acc + row
    expected = acc if beta == 0 else dtype.type(beta) * start + acc
    for n_threads in (1, 2):
        gb = start.copy()
        K.gradients(x, delta, beta, np.zeros((8, delta.shape[1]), dtype), gb, n_threads=n_threads)
        np.testing.assert_array_equal(gb, expected)


def test_threads(rng, dtype):
    x, delta = _wide(rng, dtype)
    with bp.num_threads(1):
        gW1, gb1 = K.gradients(x, delta)
    with bp.num_threads(2):
        gW2, gb2 = K.gradients(x, delta)
    np.testing.assert_array_equal(gb1, gb2)  # our column sums: the same bits for any thread count
    assert_close(gW1, gW2, dtype, k=300)  # BLAS: the same to rounding


def test_empty_batch(rng, dtype):
    # a batch of no samples contributes nothing: the gradient is beta times what was there
    gW = rng.standard_normal((3, 2)).astype(dtype)
    gb = rng.standard_normal(2).astype(dtype)
    expected = (2.5 * gW, 2.5 * gb)
    K.gradients(np.empty((0, 3), dtype), np.empty((0, 2), dtype), 2.5, gW, gb)
    assert_close(gW, expected[0], dtype)
    assert_close(gb, expected[1], dtype)
    gW, gb = K.gradients(np.empty((0, 3), dtype), np.empty((0, 2), dtype))
    np.testing.assert_array_equal(gW, np.zeros((3, 2)))
    np.testing.assert_array_equal(gb, np.zeros(2))
