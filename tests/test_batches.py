"""fit on an iterable of (X_batch, y_batch): each batch one step, the same model as the array
fit on the same batches."""

import itertools

import numpy as np
import pytest

import bp

from ._reliability import data

X, Y = data(40)


def _model():
    m = bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(3, activation="softmax")],
                      seed=0)
    m.build(4)
    return m


def _gen(weights=None):
    for s in range(0, 40, 8):
        yield (X[s:s + 8], Y[s:s + 8]) + (() if weights is None else (weights[s:s + 8],))


def _array_fit(epochs=1, **kw):
    m = _model()
    h = m.fit(X, Y, batch_size=8, shuffle=False, epochs=epochs, verbose=0, **kw)
    return m.get_flat_params(), h.history


def test_a_generator_is_the_array_fit_on_its_batches(compiled):
    m = _model()
    h = m.fit(_gen(), epochs=1, verbose=0)
    params, history = _array_fit()
    np.testing.assert_array_equal(m.get_flat_params(), params)
    assert h.history == history


class Loader:
    """A re-iterable source of batches, as torch's DataLoader is."""

    def __iter__(self):
        return _gen()


def test_a_loader_is_a_pass_per_epoch():
    m = _model()
    h = m.fit(Loader(), epochs=3, verbose=0)
    params, history = _array_fit(epochs=3)
    np.testing.assert_array_equal(m.get_flat_params(), params)
    assert h.history == history


def test_an_endless_generator_with_steps_per_epoch():
    m = _model()
    Xv, yv = data(12, seed=3)
    h = m.fit(itertools.cycle(list(_gen())), steps_per_epoch=5, epochs=3, verbose=0,
              validation_data=(Xv, yv))
    params, history = _array_fit(epochs=3, validation_data=(Xv, yv))
    np.testing.assert_array_equal(m.get_flat_params(), params)
    assert h.history == history


def test_weights_in_the_batches_and_class_weight():
    w = np.linspace(0.5, 2.0, 40)
    cw = {0: 2.0, 1: 0.5, 2: 1.0}
    m = _model()
    m.fit(_gen(w), class_weight=cw, epochs=1, verbose=0)
    params, _ = _array_fit(sample_weight=w, class_weight=cw)
    np.testing.assert_array_equal(m.get_flat_params(), params)


def test_bad_uses_are_refused():
    m = _model()
    before = m.get_flat_params()
    with pytest.raises(ValueError, match="give steps_per_epoch for epochs=2"):
        m.fit(_gen(), epochs=2, verbose=0)
    with pytest.raises(ValueError, match="accumulate must be 1"):
        m.fit(_gen(), accumulate=2, verbose=0)
    with pytest.raises(ValueError, match="balanced"):
        m.fit(_gen(), class_weight="balanced", verbose=0)
    with pytest.raises(ValueError, match="sample_weight or validation_split"):
        m.fit(_gen(), sample_weight=np.ones(40), verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch is for an iterable"):
        m.fit(X, Y, steps_per_epoch=3, verbose=0)
    with pytest.raises(ValueError, match="gave no batch"):
        m.fit(iter([]), verbose=0)
    with pytest.raises(TypeError, match=r"batch 0 must be \(X_batch, y_batch\)"):
        m.fit(iter([X]), verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
        m.fit(_gen(), steps_per_epoch=0, verbose=0)
    np.testing.assert_array_equal(m.get_flat_params(), before)  # all refused before training


def test_what_goes_wrong_mid_epoch_is_named():
    m = _model()
    batches = [(X[:8], Y[:8]), (X[8:24], Y[8:24])]
    with pytest.raises(ValueError, match="batch 1 has 16 rows; the first had 8"):
        m.fit(iter(batches), verbose=0)
    with pytest.raises(ValueError, match="ran out after 5 of steps_per_epoch=6"):
        m.fit(_gen(), steps_per_epoch=6, verbose=0)
