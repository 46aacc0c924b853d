"""bp.kernels.dense_forward (z_in = z_out_prev @ W + b, z_out = sigma(z_in)) against its NumPy twin."""

import numpy as np
import pytest

import bp
from bp import _reference as R
from bp import kernels as K
from bpcore import _blas, _openmp

from .conftest import LAYOUTS, assert_close, layouts

BATCHES = (1, 7, 33, 300)
# (n_in, n_out): a tiny layer whose product n * n_out * n_in is below the own-loop gemm threshold for
# the small batches, and a larger one above it for every batch but 1 (BLAS).
LAYERS = ((3, 4), (40, 50))
ALPHA = 0.2  # not the default 0.01, so a dropped alpha shows


def test_layers_straddle_the_gemm_threshold():
    work = [n * n_in * n_out for n in BATCHES for n_in, n_out in LAYERS]
    assert min(work) <= _blas.SMALL_GEMM_THRESHOLD < max(work)
    assert sum(w <= _blas.SMALL_GEMM_THRESHOLD for w in work) >= 2


def _layer(rng, dtype, n, n_in, n_out):
    return (rng.standard_normal((n, n_in)).astype(dtype),
            rng.standard_normal((n_in, n_out)).astype(dtype),
            rng.standard_normal(n_out).astype(dtype))


def _wide(rng, dtype):
    """A layer whose epilogue (n * n_out elements) is above the parallel threshold."""
    n = 300
    n_out = 2 * _openmp.min_parallel_work() // n + 1
    return _layer(rng, dtype, n, 24, n_out)


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("n_in, n_out", LAYERS)
def test_matches_reference(rng, dtype, activation, n, n_in, n_out):
    x, W, b = _layer(rng, dtype, n, n_in, n_out)
    z_in, z_out = K.dense_forward(x, W, b, activation, ALPHA)
    ref_in, ref_out = R.dense_forward(x, W, b, activation, ALPHA)
    assert_close(z_in, ref_in, dtype, k=n_in)
    assert_close(z_out, ref_out, dtype, k=n_in)


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
def test_no_bias(rng, dtype, activation):
    x, W, _ = _layer(rng, dtype, 33, 40, 50)
    z_in, z_out = K.dense_forward(x, W, None, activation, ALPHA)
    ref_in, ref_out = R.dense_forward(x, W, None, activation, ALPHA)
    assert_close(z_in, ref_in, dtype, k=40)
    assert_close(z_out, ref_out, dtype, k=40)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_in, n_out", LAYERS)
def test_input_layouts(rng, dtype, layout, n_in, n_out):
    # Fortran-ordered, strided and read-only inputs are accepted and give the C-ordered result.
    x, W, b = _layer(rng, dtype, 33, n_in, n_out)
    b_strided = np.zeros(2 * n_out, dtype)
    b_strided[::2] = b
    b_in = {"read-only": layouts(b[None])["read-only"][0], "rows[::2]": b_strided[::2]}.get(layout, b)
    expected = K.dense_forward(x, W, b, "tanh")
    got = K.dense_forward(layouts(x)[layout], layouts(W)[layout], b_in, "tanh")
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
def test_output_buffers_written_in_place(rng, dtype, activation):
    x, W, b = _layer(rng, dtype, 33, 40, 50)
    z_in = np.full((33, 50), np.nan, dtype)
    z_out = np.full((33, 50), np.nan, dtype)
    r_in, r_out = K.dense_forward(x, W, b, activation, ALPHA, z_in=z_in, z_out=z_out)
    assert r_in is z_in and r_out is z_out
    ref_in, ref_out = R.dense_forward(x, W, b, activation, ALPHA)
    assert_close(z_in, ref_in, dtype, k=40)
    assert_close(z_out, ref_out, dtype, k=40)


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
@pytest.mark.parametrize("n_in, n_out", LAYERS)
def test_z_in_and_z_out_one_buffer(rng, dtype, activation, n_in, n_out):
    # The same buffer for both: the activation is applied in place and the buffer holds z_out.
    x, W, b = _layer(rng, dtype, 33, n_in, n_out)
    buf = np.full((33, n_out), np.nan, dtype)
    r_in, r_out = K.dense_forward(x, W, b, activation, ALPHA, z_in=buf, z_out=buf)
    assert r_in is buf and r_out is buf
    assert_close(buf, R.dense_forward(x, W, b, activation, ALPHA)[1], dtype, k=n_in)


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
def test_threads_bit_identical_epilogue(rng, dtype, activation):
    # BLAS held to one thread, so z_in = x @ W is the same bits in both calls; the epilogue (bias,
    # sigma) is elementwise per row, so 1 or 2 OpenMP threads must give the same bits.
    x, W, b = _wide(rng, dtype)
    with bp.num_threads(1):
        one = K.dense_forward(x, W, b, activation, ALPHA, n_threads=1)
        two = K.dense_forward(x, W, b, activation, ALPHA, n_threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("activation", ("sigmoid", "softmax", "gelu"))
def test_threads_same_result(rng, dtype, activation):
    # 1 and 2 threads for BLAS and the kernels alike (bp.num_threads): the same to rounding.
    x, W, b = _wide(rng, dtype)
    with bp.num_threads(1):
        one = K.dense_forward(x, W, b, activation)
    with bp.num_threads(2):
        two = K.dense_forward(x, W, b, activation)
    assert_close(one[1], two[1], dtype, k=24)
    assert_close(two[1], R.dense_forward(x, W, b, activation)[1], dtype, k=24)


def test_leaky_relu_alpha(dtype):
    x = np.array([[-2.0, 3.0]], dtype)
    W = np.eye(2, dtype=dtype)
    for alpha in (0.0, 0.01, 0.2, 1.0):
        _, z_out = K.dense_forward(x, W, None, "leaky_relu", alpha)
        np.testing.assert_array_equal(z_out, np.array([[-2.0 * alpha, 3.0]], dtype))


def test_saturation_without_overflow(dtype):
    # sigmoid, softmax and gelu at huge |z|: the stable forms give exact 0/1 and no NaN or warning.
    x = np.array([[-1000.0, 1000.0], [0.0, 0.0]], dtype)
    W = np.eye(2, dtype=dtype)
    with np.errstate(all="raise"):
        assert K.dense_forward(x, W, None, "sigmoid")[1].tolist() == [[0.0, 1.0], [0.5, 0.5]]
        assert K.dense_forward(x, W, None, "softmax")[1].tolist() == [[0.0, 1.0], [0.5, 0.5]]
        assert K.dense_forward(x, W, None, "tanh")[1].tolist() == [[-1.0, 1.0], [0.0, 0.0]]
    assert K.dense_forward(x, W, None, "gelu")[1].tolist() == [[-0.0, 1000.0], [0.0, 0.0]]


def test_empty_batch(dtype):
    W = np.ones((3, 2), dtype)
    z_in, z_out = K.dense_forward(np.empty((0, 3), dtype), W, np.zeros(2, dtype), "relu")
    assert z_in.shape == z_out.shape == (0, 2)
