"""predict: the whole network in one call over blocks of rows (bpcore/_infer.pyx), with out=,
any input layout, and several threads at once."""

import threading

import numpy as np
import pytest

import bp
from bp import _passes, _reference

from .conftest import assert_close, layouts

ACTIVATIONS = list(bp.layers.ACTIVATIONS)


def make_model(dtype, activation="tanh", tau="softmax", n_in=6, seed=0):
    model = bp.Sequential([bp.Dense(9, activation, alpha=0.3), bp.Dense(7, activation, alpha=0.3,
                                                                        use_bias=False),
                           bp.Dense(4, tau, alpha=0.3)], dtype=dtype, seed=seed)
    model.build(n_in)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.use_bias:
            layer.b = rng.normal(0, 0.5, layer.units)
    return model


def reference(model, X):
    layers = model.layers
    return _reference.forward(X.astype(model.dtype), [d.W for d in layers], [d.b for d in layers],
                              [d.activation for d in layers], alpha=0.3)[1][-1]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 8 rows, so that a few dozen rows cross several block boundaries."""
    monkeypatch.setattr(_passes, "PREDICT_BLOCK_BYTES", 1)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("rows", [1, 2, 8, 9, 61])
def test_predict_matches_the_reference_across_blocks(small_blocks, activation, rows, dtype, rng):
    # exponential as the output only: through every layer it reaches e^80 and beyond, where the
    # float32 rounding of each z_in is amplified 80-fold
    hidden = "tanh" if activation == "exponential" else activation
    model = make_model(dtype, hidden, tau=activation)
    X = rng.normal(0, 2, (rows, 6))
    assert_close(model.predict(X), reference(model, X), dtype, k=9)


def test_the_thread_count_does_not_change_the_bits(helpers, dtype, rng):
    model = make_model(dtype)
    X = rng.normal(size=(5000, 6)).astype(dtype)  # several blocks of the default size
    with bp.num_threads(1):
        serial = model.predict(X)
    np.testing.assert_array_equal(model.predict(X), serial)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_blocks_and_threads_agree(small_blocks, n_threads, dtype, rng):
    model = make_model(dtype)
    X = rng.normal(size=(61, 6)).astype(dtype)
    with bp.num_threads(n_threads):
        blocked = model.predict(X)
    for i in (0, 7, 8, 60):  # one row alone is a matrix-vector product, not a gemm
        assert_close(model.predict(X[i:i + 1])[0], blocked[i], dtype, k=9)


def test_predict_any_layout_gives_the_same_bits(dtype, rng):
    model = make_model(dtype)
    X = rng.normal(size=(40, 6)).astype(dtype)
    want = model.predict(X)
    for variant in layouts(X).values():
        np.testing.assert_array_equal(model.predict(variant), want)
    X_int = rng.integers(-3, 3, (5, 6))
    np.testing.assert_array_equal(model.predict(X_int), model.predict(X_int.astype(dtype)))
    other = np.float64 if dtype == np.float32 else np.float32
    np.testing.assert_array_equal(model.predict(X.astype(other)),
                                  model.predict(X.astype(other).astype(dtype)))
    np.testing.assert_array_equal(model.predict(X.tolist()), want)


def test_predict_out(dtype, rng):
    model = make_model(dtype)
    X = rng.normal(size=(30, 6)).astype(dtype)
    out = np.full((30, 4), np.nan, dtype)
    result = model.predict(X, out=out)
    assert result is out
    np.testing.assert_array_equal(out, model.predict(X))
    X_F = np.asfortranarray(X)  # converted first; out is still written in place
    out[...] = 0
    assert model.predict(X_F, out=out) is out
    np.testing.assert_array_equal(out, model.predict(X))


def test_predict_out_refusals_write_nothing(rng):
    model = make_model(np.float32, n_in=4)  # 4 inputs, 4 outputs: X itself fits as out
    X = rng.normal(size=(5, 4)).astype(np.float32)
    sentinel = np.float32(-123.0)
    read_only = np.full((5, 4), sentinel, np.float32)
    read_only.flags.writeable = False
    cases = [
        (np.full((5, 4), sentinel, np.float64), TypeError, "dtype float32. Received: out with dtype float64"),
        (np.full((5, 3), sentinel, np.float32), ValueError, r"shape \(5, 4\). Received: out with shape \(5, 3\)"),
        (np.full((4, 5), sentinel, np.float32).T, ValueError, "C-contiguous"),
        (np.full((5, 8), sentinel, np.float32)[:, ::2], ValueError, "C-contiguous"),
        (read_only, ValueError, "writeable"),
        ([[0.0] * 4] * 5, TypeError, "numpy array. Received: list"),
    ]
    for out, error, message in cases:
        before = np.array(out, copy=True)
        with pytest.raises(error, match=message):
            model.predict(X, out=out)
        np.testing.assert_array_equal(np.asarray(out), before)
    X_before = X.copy()
    with pytest.raises(ValueError, match="must not overlap X"):
        model.predict(X, out=X)
    np.testing.assert_array_equal(X, X_before)
    bad = X.copy()
    bad[3, 2] = np.nan
    out = np.full((5, 4), sentinel, np.float32)
    with pytest.raises(ValueError, match="X"):
        model.predict(bad, out=out)
    assert (out == sentinel).all()


def test_predict_rejects_bad_X_as_before(rng):
    model = make_model(np.float64)
    for X, error, message in [(np.zeros((3, 5)), ValueError, "must have 6 features"),
                              (np.zeros((0, 6)), ValueError, "empty"),
                              (np.zeros(6), ValueError, "2-D"),
                              (np.array([[np.inf] * 6]), ValueError, "X"),
                              (np.zeros((2, 6), bool), TypeError, "bool")]:
        with pytest.raises(error, match=message):
            model.predict(X)


@pytest.fixture
def helpers(monkeypatch):
    """predict on 2 threads whatever the size: the caller and a helper thread share the blocks."""
    monkeypatch.setattr(_passes, "MIN_PARALLEL_STEP_FLOPS", 0)
    with bp.num_threads(2):
        yield


def test_helpers_give_the_serial_answer(small_blocks, helpers, dtype, rng):
    model = make_model(dtype)
    X = rng.normal(size=(203, 6)).astype(dtype)
    with bp.num_threads(1):
        serial = model.predict(X)
    for _ in range(20):
        np.testing.assert_array_equal(model.predict(X), serial)
    Y = rng.integers(0, 4, 203)
    with bp.num_threads(1):
        want = model.evaluate(X, Y)
    assert model.evaluate(X, Y) == want


def test_a_helper_that_never_starts_or_starts_late_changes_nothing(dtype, rng):
    """run() returns when every block is done, without waiting for a helper that has not started;
    a helper that starts after that finds no block left and touches nothing."""
    model = make_model(dtype)
    X = rng.normal(size=(100, 6)).astype(dtype)
    inference = model._passes._get_inference()
    want = inference.run(X, None, 8, 1)
    late = []
    out = inference.run(X, None, 8, 4, None, lambda fn, *args: late.append((fn, args)))
    np.testing.assert_array_equal(out, want)
    assert len(late) == 3  # three helpers asked for; none ran
    before = out.copy()
    out[...] = -1.0
    for fn, args in late:
        fn(*args)
    assert (out == -1.0).all()
    out[...] = before


def test_predict_from_several_threads_gives_the_serial_answers(small_blocks, dtype, rng):
    model = make_model(dtype)
    inputs = [rng.normal(size=(rows, 6)).astype(dtype) for rows in (1, 3, 8, 17, 64, 200)] * 2
    serial = [model.predict(X) for X in inputs]
    results = [[] for _ in inputs]
    start = threading.Barrier(len(inputs))

    def work(i):
        start.wait()
        for _ in range(30):
            results[i].append(model.predict(inputs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(serial, results):
        assert len(got) == 30
        for r in got:
            np.testing.assert_array_equal(r, want)


def test_predict_sees_weight_changes(dtype, rng):
    """The compiled pass reads the model's parameter buffer itself: set_flat_params, a layer's W
    and training all show in the next predict."""
    model = make_model(dtype)
    X = rng.normal(size=(4, 6)).astype(dtype)
    first = model.predict(X)
    model.set_flat_params(model.get_flat_params() * 0.5)
    assert_close(model.predict(X), reference(model, X), dtype, k=9)
    assert not np.allclose(model.predict(X), first)
    model.layers[-1].W = np.zeros_like(model.layers[-1].W)
    model.layers[-1].b = np.zeros(4)
    np.testing.assert_allclose(model.predict(X), 0.25, rtol=1e-6)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_evaluate_matches_the_reference_on_threads(n_threads, rng):
    model = make_model(np.float64, "relu", "softmax")
    X = rng.normal(size=(300, 6))
    y = rng.integers(0, 4, 300)
    with bp.num_threads(n_threads):
        result = model.evaluate(X, y)
    f_in = _reference.forward(X, [d.W for d in model.layers], [d.b for d in model.layers],
                              [d.activation for d in model.layers], alpha=0.3)[0][-1]
    Y = np.eye(4)[y]
    want = _reference.per_sample_loss("cross_entropy", f_in, None, Y).mean()
    assert result["loss"] == pytest.approx(want, rel=1e-12)


def test_float32_softmax_is_within_a_few_ulps():
    """softmax's exponentials go through a vectorised exp (bpcore/_activations.pxd): each
    probability within 4 ulps of the exact softmax of the same max-subtracted float32 logits,
    0 where that is below float32's smallest normal."""
    model = bp.Sequential([bp.Dense(10, "softmax")], seed=0)
    model.build(10)
    model.layers[0].W = np.eye(10)
    model.layers[0].b = np.zeros(10)
    X = np.random.default_rng(0).uniform(-100, 10, (50000, 10)).astype(np.float32)
    X[0, 0], X[1] = -1e30, 0.0
    got = model.predict(X)
    shifted = (X - X.max(axis=1, keepdims=True)).astype(np.float64)  # exact in float32 as bp does
    e = np.exp(shifted)
    want = e / e.sum(axis=1, keepdims=True)
    normal = want >= np.finfo(np.float32).tiny
    ulps = np.abs(got - want)[normal] / want[normal] / np.finfo(np.float32).eps
    assert ulps.max() <= 4
    assert (np.abs(got[~normal]) <= np.finfo(np.float32).tiny).all()
    np.testing.assert_array_equal(got[1], np.float32(0.1))
