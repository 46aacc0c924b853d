"""Quick end-to-end checks of the model API (the detailed API tests live in test_api_*.py)."""

import numpy as np
import pytest

import bp
from bp import _reference as R


def test_xor_reaches_full_accuracy():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([0, 1, 1, 0], dtype=np.float64)
    model = bp.Sequential([bp.Dense(2, activation="sigmoid"), bp.Dense(1, activation="sigmoid")],
                          dtype="float64", seed=0)
    model.fit(X, y, loss="mse", optimizer=bp.SGD(2.0, momentum=0.9), epochs=300, batch_size=4,
              shuffle=False, verbose=0)
    assert np.array_equal(model.predict(X).ravel() >= 0.5, y >= 0.5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradients_match_reference(dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 4))
    y = rng.integers(0, 3, 9)
    model = bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(3, activation="softmax")],
                          dtype=dtype, seed=0)
    grads = model.gradients(X, y, loss="cross_entropy")
    Ws = [L.W.astype(np.float64) for L in model]
    bs = [L.b.astype(np.float64) for L in model]
    Y = np.eye(3)[y]
    _, _, gW, gb = R.backward(X.astype(dtype).astype(np.float64), Y, Ws, bs,
                              ["tanh", "softmax"], "cross_entropy")
    tol = 1e-5 if dtype == "float32" else 1e-12
    for (kW, kb), rW, rb in zip(grads, gW, gb):
        np.testing.assert_allclose(kW, rW, rtol=tol * 10, atol=tol)
        np.testing.assert_allclose(kb, rb, rtol=tol * 10, atol=tol)


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 3))
    y = rng.integers(0, 2, 20)
    model = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(1, activation="sigmoid")],
                          seed=0)
    model.fit(X, y, epochs=2, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    again = bp.load(path)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


def test_error_signals_are_snapshots():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    model = bp.Sequential([bp.Dense(4, activation="tanh"), bp.Dense(2, activation="softmax")],
                          dtype="float64", seed=0)
    model.gradients(X, y)
    first = model.error_signals
    kept = [d.copy() for d in first]
    model.backward(X[::-1], y[::-1])  # same batch size: the same workspace is reused
    for d, k in zip(first, kept):
        np.testing.assert_array_equal(d, k)
        assert not d.flags.writeable
    assert not np.array_equal(model.error_signals[-1], kept[-1])


def test_cross_entropy_soft_targets_must_sum_to_one():
    model = bp.Sequential([bp.Dense(3, activation="softmax")], dtype="float64", seed=0)
    X = np.ones((2, 2))
    Y_ok = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    model.gradients(X, Y_ok, loss="cross_entropy")
    before = model.get_flat_params()
    with pytest.raises(ValueError, match=r"rows must sum to 1.*summing to 0\.9 at row 1"):
        model.fit(X, np.array([[0.2, 0.3, 0.5], [0.9, 0.0, 0.0]]), loss="cross_entropy", verbose=0)
    np.testing.assert_array_equal(model.get_flat_params(), before)
