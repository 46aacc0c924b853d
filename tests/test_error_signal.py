"""bp.kernels.output_delta and hidden_delta (the error signal delta = dL/dz_in) against their twins.

    delta[O] = dL/df_out * tau'(f_in)   (fused to w_i scale (f_out - y) for softmax + cross_entropy
                                         and sigmoid + binary_cross_entropy)
    delta[i] = (delta[i+1] @ W[i+1].T) * sigma'(z_in[i])
"""

import numpy as np
import pytest

import bp
from bp import _reference as R
from bp import kernels as K
from bpcore import _openmp

from .conftest import LAYOUTS, assert_close, layouts

BATCHES = (1, 7, 33, 300)
ALPHA = 0.2
PAIRS = [(loss, tau) for loss in K.LOSSES for tau in K.LOSS_OUTPUTS[loss]]
INVALID_PAIRS = [(loss, tau) for loss in K.LOSSES for tau in K.ACTIVATIONS
                 if tau not in K.LOSS_OUTPUTS[loss]]


def test_pairs():
    assert ("cross_entropy", "softmax") in PAIRS and ("binary_cross_entropy", "sigmoid") in PAIRS
    # mse, mae and huber go through any tau; the cross-entropies and poisson have their own
    # (cross-entropy also the identity: from the logits)
    assert len(PAIRS) == 3 * len(K.ACTIVATIONS) + 4
    assert ("cross_entropy", "identity") in PAIRS and ("poisson", "exponential") in PAIRS
    assert ("cross_entropy", "sigmoid") in INVALID_PAIRS


def targets(rng, loss, n, m, dtype):
    """y as each loss expects it: rows on the simplex for cross-entropy, in [0, 1] for binary."""
    if loss == "cross_entropy":
        return rng.dirichlet(np.ones(m), n).astype(dtype)
    if loss == "binary_cross_entropy":
        return rng.uniform(0, 1, (n, m)).astype(dtype)
    if loss == "poisson":
        return rng.poisson(1.5, (n, m)).astype(dtype)
    return rng.standard_normal((n, m)).astype(dtype)


def output_layer(rng, dtype, loss, tau, n, m):
    f_in = rng.standard_normal((n, m)).astype(dtype)
    f_out = R.sigma(tau, f_in, ALPHA).astype(dtype)
    return f_in, f_out, targets(rng, loss, n, m, dtype)


def hidden_layer(rng, dtype, activation, n, m, m_next):
    delta_next = rng.standard_normal((n, m_next)).astype(dtype)
    W_next = rng.standard_normal((m, m_next)).astype(dtype)
    z_in = rng.standard_normal((n, m)).astype(dtype)
    z_out = R.sigma(activation, z_in, ALPHA).astype(dtype)
    return delta_next, W_next, z_in, z_out


# ---- output layer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loss, tau", PAIRS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("m", (1, 3, 50))
def test_output_delta_matches_reference(rng, dtype, loss, tau, n, m):
    f_in, f_out, y = output_layer(rng, dtype, loss, tau, n, m)
    got = K.output_delta(f_in, f_out, y, loss, tau, ALPHA)
    assert_close(got, R.output_delta(f_in, f_out, y, loss, tau, ALPHA), dtype, k=m)


@pytest.mark.parametrize("loss, tau", PAIRS)
def test_output_delta_scale_and_sample_weight(rng, dtype, loss, tau):
    n, m = 33, 5
    f_in, f_out, y = output_layer(rng, dtype, loss, tau, n, m)
    w = rng.uniform(0, 3, n).astype(dtype)
    for kwargs in ({"scale": 2.5}, {"sample_weight": w}, {"sample_weight": w, "scale": 2.5}):
        got = K.output_delta(f_in, f_out, y, loss, tau, ALPHA, **kwargs)
        assert_close(got, R.output_delta(f_in, f_out, y, loss, tau, ALPHA, **kwargs), dtype, k=m,
                     err_msg=str(list(kwargs)))
    # a weight of 2 on every sample is the same as doubling the scale
    two = K.output_delta(f_in, f_out, y, loss, tau, ALPHA, sample_weight=np.full(n, 2, dtype),
                         scale=1.25)
    assert_close(two, K.output_delta(f_in, f_out, y, loss, tau, ALPHA, scale=2.5), dtype)


@pytest.mark.parametrize("loss, tau", INVALID_PAIRS)
def test_output_delta_rejects_invalid_pair(rng, loss, tau):
    f_in, f_out, y = output_layer(rng, np.float64, "mse", tau, 4, 3)
    out = np.full((4, 3), 7.0)
    with pytest.raises(ValueError, match=rf"loss '{loss}' needs an output activation in .*"
                                         rf"Received: output activation '{tau}'"):
        K.output_delta(f_in, f_out, y, loss, tau, out=out)
    assert (out == 7.0).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("loss, tau", [("mse", "tanh"), ("cross_entropy", "softmax")])
def test_output_delta_input_layouts(rng, dtype, layout, loss, tau):
    f_in, f_out, y = output_layer(rng, dtype, loss, tau, 33, 6)
    w = rng.uniform(0, 1, 33).astype(dtype)
    w_in = {"read-only": np.frombuffer(w.tobytes(), dtype), "rows[::2]": np.repeat(w, 2)[::2]}
    expected = K.output_delta(f_in, f_out, y, loss, tau, sample_weight=w)
    got = K.output_delta(layouts(f_in)[layout], layouts(f_out)[layout], layouts(y)[layout], loss,
                         tau, sample_weight=w_in.get(layout, w))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("loss, tau", PAIRS)
def test_output_delta_threads_bit_identical(rng, dtype, loss, tau):
    # purely elementwise per row: the same bits for any thread count
    n = 300
    m = 2 * _openmp.min_parallel_work() // n + 1
    f_in, f_out, y = output_layer(rng, dtype, loss, tau, n, m)
    w = rng.uniform(0, 2, n).astype(dtype)
    one = K.output_delta(f_in, f_out, y, loss, tau, ALPHA, sample_weight=w, n_threads=1)
    two = K.output_delta(f_in, f_out, y, loss, tau, ALPHA, sample_weight=w, n_threads=2)
    np.testing.assert_array_equal(one, two)


# ---- hidden layers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("m, m_next", ((4, 3), (50, 40)))
def test_hidden_delta_matches_reference(rng, dtype, activation, n, m, m_next):
    # (4, 3) is below the own-loop gemm threshold for the small batches, (50, 40) above it
    args = hidden_layer(rng, dtype, activation, n, m, m_next)
    got = K.hidden_delta(*args, activation, ALPHA)
    assert_close(got, R.hidden_delta(*args, activation, ALPHA), dtype, k=m_next)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", ("gelu", "softmax", "leaky_relu"))
def test_hidden_delta_input_layouts(rng, dtype, layout, activation):
    args = hidden_layer(rng, dtype, activation, 33, 50, 40)
    expected = K.hidden_delta(*args, activation, ALPHA)
    got = K.hidden_delta(*(layouts(a)[layout] for a in args), activation, ALPHA)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
def test_hidden_delta_out_buffer(rng, dtype, activation):
    args = hidden_layer(rng, dtype, activation, 33, 50, 40)
    out = np.full((33, 50), np.nan, dtype)
    assert K.hidden_delta(*args, activation, ALPHA, out=out) is out
    assert_close(out, R.hidden_delta(*args, activation, ALPHA), dtype, k=40)


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
def test_hidden_delta_threads_bit_identical_epilogue(rng, dtype, activation):
    # BLAS held to one thread so the product is the same bits; the sigma' sweep is per row.
    n = 300
    m = 2 * _openmp.min_parallel_work() // n + 1
    args = hidden_layer(rng, dtype, activation, n, m, 16)
    with bp.num_threads(1):
        one = K.hidden_delta(*args, activation, ALPHA, n_threads=1)
        two = K.hidden_delta(*args, activation, ALPHA, n_threads=2)
    np.testing.assert_array_equal(one, two)
    with bp.num_threads(2):
        both = K.hidden_delta(*args, activation, ALPHA)
    assert_close(both, one, dtype, k=16)


def test_relu_derivative_at_zero(dtype):
    # sigma'(0) = 0 for relu and alpha for leaky_relu (the subgradient PyTorch uses)
    z_in = np.array([[0.0, -1.0, 2.0]], dtype)
    W_next = np.eye(3, dtype=dtype)
    ones = np.ones((1, 3), dtype)
    relu = K.hidden_delta(ones, W_next, z_in, R.sigma("relu", z_in), "relu")
    leaky = K.hidden_delta(ones, W_next, z_in, R.sigma("leaky_relu", z_in, 0.2), "leaky_relu", 0.2)
    np.testing.assert_array_equal(relu, [[0, 0, 1]])
    np.testing.assert_array_equal(leaky, np.array([[0.2, 0.2, 1]], dtype))


@pytest.mark.parametrize("loss, tau", PAIRS)
def test_output_delta_empty_batch(dtype, loss, tau):
    e = np.empty((0, 3), dtype)
    assert K.output_delta(e, e, e, loss, tau).shape == (0, 3)
