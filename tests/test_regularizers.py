"""Weight penalties per layer: the fused kernel against the NumPy reference and central
differences, and fit / gradients / evaluate / save with them, compiled and in the Python twin."""

import numpy as np
import pytest

import bp
from bp import _reference as ref
from bpcore import _regularize

from ._reliability import data

TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("l1, l2", [(0.0, 0.3), (0.2, 0.0), (0.05, 0.7)])
@pytest.mark.parametrize("n", [1000, 100_003])  # chunks of 16 (all tail), of 1563 (runs of 64)
def test_penalty_kernel_matches_the_reference(dtype, l1, l2, n):
    rng = np.random.default_rng(1)
    W = rng.standard_normal(n).astype(dtype)
    W[::17] = 0  # sign(0) = 0
    grad0 = rng.standard_normal(n).astype(dtype)
    grad = grad0.copy()
    value = _regularize.penalty(W, l1, l2, grad, 1)
    R, dR = ref.penalty(W, l1, l2)
    assert value == pytest.approx(R, rel=TOL[dtype])
    np.testing.assert_allclose(grad, grad0 + dR, rtol=TOL[dtype], atol=TOL[dtype])
    assert _regularize.penalty(W, l1, l2, None, 1) == value  # the value alone


def test_penalty_kernel_same_bits_for_any_thread_count():
    W = np.random.default_rng(2).standard_normal(200_000)
    g1, g2 = np.zeros_like(W), np.zeros_like(W)
    assert _regularize.penalty(W, 0.1, 0.2, g1, 1) == _regularize.penalty(W, 0.1, 0.2, g2, 2)
    assert g1.tobytes() == g2.tobytes()


def test_regularizer_gradient_against_central_differences():
    reg = bp.l1_l2(l1=0.03, l2=0.4)
    W = np.random.default_rng(3).standard_normal((4, 5))
    W[np.abs(W) < 0.05] = 0.3  # |W| has no kink within h
    h = 1e-6
    numeric = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += h
        Wm[idx] -= h
        numeric[idx] = (reg(Wp) - reg(Wm)) / (2 * h)
    np.testing.assert_allclose(reg.gradient(W), numeric, rtol=1e-6, atol=1e-8)
    assert reg(np.ones((2, 3))) == pytest.approx(6 * 0.03 + 6 * 0.4)


def _model(kernel=None, bias=None, dtype="float64", seed=0):
    return bp.Sequential([bp.Dense(6, activation="tanh", kernel_regularizer=kernel,
                                   bias_regularizer=bias),
                          bp.Dense(3, activation="softmax", kernel_regularizer=kernel)],
                         dtype=dtype, seed=seed)


def test_one_step_is_the_data_gradient_plus_the_penalty_gradient():
    X, y = data(16)
    reg, breg = bp.l2(0.05), bp.l1(0.02)
    model = _model(reg, breg)
    model.build(4)
    Ws = [L.W.copy() for L in model.layers]
    bs = [L.b.copy() for L in model.layers]
    _, _, gW, gb = ref.backward(X, np.eye(3)[y], Ws, bs, ["tanh", "softmax"], "cross_entropy")
    h = model.fit(X, y, optimizer=bp.SGD(0.1), batch_size=16, epochs=1, shuffle=False, verbose=0)
    expected_W = [W - 0.1 * (g + reg.gradient(W)) for W, g in zip(Ws, gW)]
    expected_b0 = bs[0] - 0.1 * (gb[0] + breg.gradient(bs[0]))
    for L, W in zip(model.layers, expected_W):
        np.testing.assert_allclose(L.W, W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.layers[0].b, expected_b0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.layers[1].b, bs[1] - 0.1 * gb[1], rtol=1e-12, atol=1e-14)
    data_loss = ref.network_loss(X, np.eye(3)[y], Ws, bs, ["tanh", "softmax"], "cross_entropy")
    penalty = sum(reg(W) for W in Ws) + breg(bs[0])
    assert h.history["loss"] == [pytest.approx(data_loss + penalty, rel=1e-12)]


def test_gradients_and_evaluate_include_the_penalty():
    X, y = data(16)
    plain, reg = _model(), _model(bp.l2(0.05), bp.l1_l2(0.01, 0.02))
    g_plain, g_reg = plain.gradients(X, y), reg.gradients(X, y)
    for L, (gW, _gb), (gW0, _gb0) in zip(reg.layers, g_reg, g_plain):
        np.testing.assert_allclose(gW, gW0 + L.kernel_regularizer.gradient(L.W), rtol=1e-12,
                                   atol=1e-14)
    np.testing.assert_allclose(g_reg[0][1], g_plain[0][1] + bp.l1_l2(0.01, 0.02).gradient(
        reg.layers[0].b), rtol=1e-12, atol=1e-14)
    penalty = sum(bp.l2(0.05)(L.W) for L in reg.layers) + bp.l1_l2(0.01, 0.02)(reg.layers[0].b)
    assert reg.evaluate(X, y)["loss"] == pytest.approx(plain.evaluate(X, y)["loss"] + penalty,
                                                      rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_and_python_twin_train_alike(dtype):
    X, y = data(40)
    runs = []
    for compiled in (True, False):
        model = _model(bp.l1_l2(0.01, 0.05), bp.l2(0.1), dtype=dtype)
        model.build(4)
        model._passes.compiled = compiled
        h = model.fit(X, y, optimizer=bp.Adam(1e-2), epochs=3, batch_size=8, accumulate=2,
                      verbose=0)
        runs.append((model.get_flat_params(), h.history["loss"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_the_penalty_is_added_once_per_optimizer_step():
    X, y = data(40)
    a, b = _model(bp.l2(0.2)), _model(bp.l2(0.2))
    a.fit(X, y, optimizer=bp.SGD(0.1), batch_size=10, epochs=2, shuffle=False, verbose=0)
    b.fit(X, y, optimizer=bp.SGD(0.1), batch_size=5, accumulate=2, epochs=2, shuffle=False,
          verbose=0)
    np.testing.assert_allclose(a.get_flat_params(), b.get_flat_params(), rtol=1e-12, atol=1e-14)
    c = _model()
    c.fit(X, y, optimizer=bp.SGD(0.1), batch_size=10, epochs=2, shuffle=False, verbose=0)
    assert np.abs(c.get_flat_params()).sum() > np.abs(a.get_flat_params()).sum()  # it shrinks W


def test_regularizers_are_saved_and_loaded(tmp_path):
    X, y = data(16)
    model = _model(bp.l1_l2(0.01, 0.02), bp.l2(0.3))
    model.fit(X, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    back = bp.load(tmp_path / "m.npz")
    assert back.layers[0].kernel_regularizer == bp.l1_l2(0.01, 0.02)
    assert back.layers[0].bias_regularizer == bp.l2(0.3)
    assert back.layers[1].bias_regularizer is None
    assert back.evaluate(X, y) == model.evaluate(X, y)
    assert bp.Dense(3, kernel_regularizer="l2").kernel_regularizer == bp.l2(0.01)


@pytest.mark.parametrize("make, err, match", [
    (lambda: bp.Dense(3, kernel_regularizer="l3"), TypeError, "kernel_regularizer must be"),
    (lambda: bp.Dense(3, bias_regularizer=0.1), TypeError, "bias_regularizer must be"),
    (lambda: bp.l2(-1e-4), ValueError, "l2"),
    (lambda: bp.l1(float("nan")), ValueError, "l1"),
])
def test_bad_regularizers_are_refused(make, err, match):
    with pytest.raises(err, match=match):
        make()
