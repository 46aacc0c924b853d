"""bp.kernels.loss_value (L = scale * sum_i w_i l_i, and the l_i) against its twin, and the
agreement of the loss with the error signal: output_delta must be dL/df_in of loss_value, with the
same default scale (the reduction)."""

import numpy as np
import pytest

from bp import _reference as R
from bp import kernels as K
from bpcore import _openmp

from .conftest import LAYOUTS, assert_close, layouts
from .test_error_signal import PAIRS, targets

BATCHES = (1, 7, 33, 300)
NATURAL = {"mse": "identity", "binary_cross_entropy": "sigmoid", "cross_entropy": "softmax",
           "mae": "identity", "huber": "identity", "poisson": "exponential"}


def _batch(rng, dtype, loss, n, m, tau=None):
    f_in = rng.standard_normal((n, m)).astype(dtype)
    f_out = R.sigma(tau or NATURAL[loss], f_in).astype(dtype)
    return f_in, f_out, targets(rng, loss, n, m, dtype)


@pytest.mark.parametrize("loss", K.LOSSES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("m", (1, 3, 50))
def test_matches_reference(rng, dtype, loss, n, m):
    f_in, f_out, y = _batch(rng, dtype, loss, n, m)
    per = np.full(n, np.nan, dtype)
    L = K.loss_value(f_in, f_out, y, loss, per_sample=per)
    per_ref = np.empty(n, dtype)
    L_ref = R.loss_value(f_in, f_out, y, loss, per_sample=per_ref)
    assert isinstance(L, float)
    assert_close(per, per_ref, dtype, k=m)
    # L is summed in double from the float32 l_i: compare it at the l_i's precision
    np.testing.assert_allclose(L, L_ref, rtol=10 * np.finfo(dtype).eps * np.sqrt(m))


@pytest.mark.parametrize("loss", K.LOSSES)
def test_scale_and_sample_weight(rng, dtype, loss):
    n, m = 33, 5
    f_in, f_out, y = _batch(rng, dtype, loss, n, m)
    w = rng.uniform(0, 3, n).astype(dtype)
    for kwargs in ({"scale": 2.5}, {"sample_weight": w}, {"sample_weight": w, "scale": 2.5}):
        got = K.loss_value(f_in, f_out, y, loss, **kwargs)
        want = R.loss_value(f_in, f_out, y, loss, **kwargs)
        np.testing.assert_allclose(got, want, rtol=100 * np.finfo(dtype).eps, err_msg=str(kwargs))


@pytest.mark.parametrize("loss", K.LOSSES)
def test_default_scale_is_pytorch_mean(rng, loss):
    # bp's default reduction is PyTorch's reduction="mean": over all elements for MSELoss and
    # BCEWithLogitsLoss, over samples for CrossEntropyLoss (with probability targets).
    n, m = 7, 3
    f_in, f_out, y = _batch(rng, np.float64, loss, n, m)
    if loss == "mse":
        torch_mean = np.mean((f_out - y) ** 2)
    elif loss == "binary_cross_entropy":
        p = 1 / (1 + np.exp(-f_in))
        torch_mean = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    elif loss == "mae":
        torch_mean = np.mean(np.abs(f_out - y))
    elif loss == "huber":
        d = np.abs(f_out - y)
        torch_mean = np.mean(np.where(d < 1, 0.5 * d * d, d - 0.5))
    elif loss == "poisson":
        torch_mean = np.mean(np.exp(f_in) - y * f_in)
    else:
        log_softmax = f_in - np.log(np.exp(f_in).sum(axis=1, keepdims=True))
        torch_mean = np.mean(-(y * log_softmax).sum(axis=1))
    np.testing.assert_allclose(K.loss_value(f_in, f_out, y, loss), torch_mean, rtol=1e-12)
    np.testing.assert_allclose(R.loss_value(f_in, f_out, y, loss), torch_mean, rtol=1e-12)


@pytest.mark.parametrize("loss, tau", PAIRS)
@pytest.mark.parametrize("weighted", (False, True))
def test_output_delta_is_the_gradient_of_the_loss(rng, loss, tau, weighted):
    # Central differences of loss_value(f_in, tau(f_in)) in float64: the error signal and the loss
    # must use one definition of the reduction.
    n, m = 4, 3
    f_in, _, y = _batch(rng, np.float64, loss, n, m, tau)
    if tau in ("relu", "leaky_relu"):
        f_in += np.where(f_in > 0, 0.1, -0.1)  # keep away from the kink
    w = rng.uniform(0.5, 2, n) if weighted else None

    def L(z):
        return K.loss_value(z, R.sigma(tau, z, 0.2), y, loss, sample_weight=w)

    numeric = np.zeros_like(f_in)
    eps = 1e-6
    for idx in np.ndindex(*f_in.shape):
        up, down = f_in.copy(), f_in.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (L(up) - L(down)) / (2 * eps)
    delta = K.output_delta(f_in, R.sigma(tau, f_in, 0.2), y, loss, tau, 0.2, sample_weight=w)
    np.testing.assert_allclose(delta, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("loss", K.LOSSES)
def test_input_layouts(rng, dtype, layout, loss):
    f_in, f_out, y = _batch(rng, dtype, loss, 33, 6)
    expected = K.loss_value(f_in, f_out, y, loss)
    got = K.loss_value(layouts(f_in)[layout], layouts(f_out)[layout], layouts(y)[layout], loss)
    assert got == expected


@pytest.mark.parametrize("loss", K.LOSSES)
def test_threads_bit_identical(rng, dtype, loss):
    # l_i in parallel over rows, then summed in row order: the same bits for any thread count
    n = 300
    m = 2 * _openmp.min_parallel_work() // n + 1
    f_in, f_out, y = _batch(rng, dtype, loss, n, m)
    per1, per2 = np.empty(n, dtype), np.empty(n, dtype)
    L1 = K.loss_value(f_in, f_out, y, loss, per_sample=per1, n_threads=1)
    L2 = K.loss_value(f_in, f_out, y, loss, per_sample=per2, n_threads=2)
    assert L1 == L2
    np.testing.assert_array_equal(per1, per2)


def test_cross_entropies_from_logits_are_exact_in_saturation(dtype):
    # where sigmoid/softmax have rounded to exactly 0 or 1, the loss is still finite and right:
    # it is computed from the logits f_in, not from log(f_out)
    f_in = np.array([[200.0, -200.0]], dtype)
    y = np.array([[0.0, 1.0]], dtype)
    bce = K.loss_value(f_in, R.sigma("sigmoid", f_in), y, "binary_cross_entropy", scale=1.0)
    ce = K.loss_value(f_in, R.sigma("softmax", f_in), y, "cross_entropy", scale=1.0)
    np.testing.assert_allclose(bce, 400.0, rtol=1e-6)  # 200 per element, summed
    np.testing.assert_allclose(ce, 400.0, rtol=1e-6)


@pytest.mark.parametrize("loss", K.LOSSES)
def test_empty_batch(dtype, loss):
    # no samples (a last, empty micro-batch) or no outputs: the loss is the empty sum, 0
    for shape in ((0, 3), (3, 0)):
        e = np.empty(shape, dtype)
        per = np.full(shape[0], np.nan, dtype)
        assert K.loss_value(e, e, e, loss, per_sample=per) == 0.0
        np.testing.assert_array_equal(per, np.zeros(shape[0]))


def test_loss_values_are_pytorch_means():
    """Independent of the reference: the formulas of torch.nn.MSELoss, BCEWithLogitsLoss and
    CrossEntropyLoss with reduction="mean", written out directly (m = 3 outputs, so a loss that
    averaged over outputs twice would be off by 3)."""
    rng = np.random.default_rng(3)
    f_in = rng.standard_normal((5, 3))
    y = rng.random((5, 3))
    f_out = R.sigma("identity", f_in)
    assert np.isclose(K.loss_value(f_in, f_out, y, "mse"), np.mean((f_in - y) ** 2), rtol=1e-12)
    p = 1 / (1 + np.exp(-f_in))
    bce = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert np.isclose(K.loss_value(f_in, p, y, "binary_cross_entropy"), bce, rtol=1e-12)
    labels = np.array([0, 2, 1, 1, 0])
    s = np.exp(f_in) / np.exp(f_in).sum(axis=1, keepdims=True)
    ce = -np.mean(np.log(s[np.arange(5), labels]))
    assert np.isclose(K.loss_value(f_in, s, np.eye(3)[labels], "cross_entropy"), ce, rtol=1e-12)
