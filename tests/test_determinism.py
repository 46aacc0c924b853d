"""Determinism: the same seed gives bit-identical weights after training, in this process and in
a fresh interpreter; training split over several fit calls equals one fit call; the seed is the
only source of randomness (a different seed gives a different model)."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import bp

try:  # tests/ as a package (it has an __init__.py) or as a plain directory on sys.path
    from ._reliability import params_equal
except ImportError:
    from _reliability import params_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((90, 6))
    return X, rng.integers(0, 3, 90)


def _model(seed, dtype):
    return bp.Sequential([bp.Dense(16, activation="gelu"), bp.Dense(8, activation="leaky_relu"),
                          bp.Dense(3, activation="softmax")], dtype=dtype, seed=seed)


OPTIMIZERS = {"sgd": lambda: bp.SGD(0.05, momentum=0.9, nesterov=True),
              "adam": lambda: bp.Adam(1e-2), "adamw": lambda: bp.AdamW(1e-2, global_clipnorm=0.5)}


def _train(seed, dtype, optimizer):
    X, y = _data()
    model = _model(seed, dtype)
    model.fit(X, y, optimizer=OPTIMIZERS[optimizer](), epochs=3, batch_size=8, accumulate=2,
              validation_split=0.2, shuffle=True, verbose=0)
    return model


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_weights(dtype, optimizer):
    assert params_equal(_train(7, dtype, optimizer), _train(7, dtype, optimizer))


def test_different_seed_different_weights():
    a, b = _train(1, "float32", "adam"), _train(2, "float32", "adam")
    assert not np.array_equal(a.get_flat_params(), b.get_flat_params())


def test_no_seed_is_fresh_randomness():
    a, b = _model(None, "float32"), _model(None, "float32")
    a.build(6)
    b.build(6)
    assert not np.array_equal(a.get_flat_params(), b.get_flat_params())


SCRIPT = """
import hashlib, sys
sys.path.insert(0, {tests!r})
import test_determinism as t
m = t._train(7, "float64", "adam")
print(hashlib.sha256(m.get_flat_params().tobytes()).hexdigest())
"""


def test_same_seed_same_weights_in_a_fresh_interpreter():
    here = hashlib.sha256(_train(7, "float64", "adam").get_flat_params().tobytes()).hexdigest()
    env = dict(os.environ, PYTHONHASHSEED="12345",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=os.path.join(ROOT, "tests"))],
                         capture_output=True, text=True, env=env, check=True, timeout=120)
    assert out.stdout.strip() == here


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fit_in_pieces_equals_one_fit(optimizer):
    """The seeded generator and the optimizer state carry over from one fit call to the next:
    fit(epochs=3) == fit(epochs=1) three times == partial_fit three times (constant rate)."""
    X, y = _data()
    opt_kwargs = dict(batch_size=8, shuffle=True, verbose=0)
    whole = _model(3, "float32")
    whole.fit(X, y, optimizer=OPTIMIZERS[optimizer](), epochs=3, **opt_kwargs)
    pieces = _model(3, "float32")
    pieces.compile(loss="cross_entropy", optimizer=OPTIMIZERS[optimizer]())
    for _ in range(3):
        pieces.fit(X, y, epochs=1, **opt_kwargs)
    partial = _model(3, "float32")
    partial.compile(optimizer=OPTIMIZERS[optimizer]())
    for _ in range(3):
        partial.partial_fit(X, y, batch_size=8)
    assert params_equal(whole, pieces)
    assert params_equal(whole, partial)


def test_predict_is_repeatable():
    X, y = _data()
    model = _train(0, "float32", "sgd")
    first = model.predict(X)
    for _ in range(3):
        assert model.predict(X).tobytes() == first.tobytes()
