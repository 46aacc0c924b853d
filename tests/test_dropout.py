"""Dropout: the counter-based mask kernel against its NumPy twin (bits, rate, threads), the layer's
checks, and training with it: one step against the mathematics written out, the compiled engine
against the Python twin, gradients against central differences with the mask fixed, and
predict / evaluate / gradients in inference mode."""

import numpy as np
import pytest

import bp
from bp import _reference as ref
from bpcore import _dropout

from ._reliability import data


def _forward(z, seed, draw, rate, n_threads=1):
    mask = np.empty(z.shape, np.uint8)
    z_drop = np.empty_like(z)
    _dropout.dropout_forward(z, seed, draw, rate, mask, z_drop, n_threads)
    return mask, z_drop


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 129)])
def test_mask_kernel_matches_the_numpy_twin(dtype, shape):
    z = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    mask, z_drop = _forward(z, 2**64 - 5, 11, 0.3)
    np.testing.assert_array_equal(mask, ref.dropout_mask(2**64 - 5, 11, *shape, 0.3))
    np.testing.assert_array_equal(z_drop, np.where(mask == 1, z * dtype(1 / 0.7), 0))
    np.testing.assert_allclose(z_drop, ref.dropout_forward(z, mask, 0.3), rtol=4 * np.finfo(dtype).eps)
    delta = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    expected = np.where(mask == 1, delta * dtype(1 / 0.7), 0)
    _dropout.dropout_backward(mask, 0.3, delta, 1)
    np.testing.assert_array_equal(delta, expected)


def test_masks_are_the_same_bits_for_one_and_two_threads():
    z = np.ones((2048, 256))
    m1, d1 = _forward(z, 7, 3, 0.5, n_threads=1)
    m2, d2 = _forward(z, 7, 3, 0.5, n_threads=2)
    assert m1.tobytes() == m2.tobytes() and d1.tobytes() == d2.tobytes()
    delta1, delta2 = np.ones_like(z), np.ones_like(z)
    _dropout.dropout_backward(m1, 0.5, delta1, 1)
    _dropout.dropout_backward(m1, 0.5, delta2, 2)
    assert delta1.tobytes() == delta2.tobytes()


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
def test_the_mask_drops_units_at_the_rate(rate):
    n = 400 * 250
    mask, _ = _forward(np.ones((400, 250)), 123, 0, rate)
    kept = mask.mean()
    # binomial: 5 standard deviations
    assert abs(kept - (1 - rate)) <= 5 * np.sqrt(rate * (1 - rate) / n) + 1e-12
    # no structure by row or unit: each row's and column's keep rate near the mean
    assert abs(mask.mean(axis=1).mean() - kept) < 1e-12
    if 0 < rate:
        assert mask.mean(axis=0).std() < 4 * np.sqrt(rate * (1 - rate) / 400)


def test_batches_and_seeds_draw_different_masks():
    z = np.ones((50, 40))
    base = _forward(z, 1, 0, 0.5)[0]
    assert not np.array_equal(base, _forward(z, 1, 1, 0.5)[0])
    assert not np.array_equal(base, _forward(z, 2, 0, 0.5)[0])
    np.testing.assert_array_equal(base, _forward(z, 1, 0, 0.5)[0])
    # masks of two batches agree on about half the units, as independent ones do
    agree = (base == _forward(z, 1, 1, 0.5)[0]).mean()
    assert 0.45 < agree < 0.55


# ---- the layer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate, err", [(-0.1, ValueError), (1.0, ValueError),
                                       (float("nan"), ValueError), ("0.5", TypeError),
                                       (True, TypeError)])
def test_bad_rates_are_refused(rate, err):
    with pytest.raises(err, match="rate"):
        bp.Dropout(rate)


def test_bad_places_and_seeds_are_refused():
    with pytest.raises(ValueError, match="seed"):
        bp.Dropout(0.5, seed=-1)
    with pytest.raises(ValueError, match="softmax"):
        bp.Sequential([bp.Dense(3, activation="softmax"), bp.Dropout(0.5), bp.Dense(2)])
    model = bp.Sequential([bp.Dense(3), bp.Dense(2), bp.Dropout(0.5)])
    with pytest.raises(ValueError, match="must be followed by a Dense"):
        model.predict(np.ones((2, 4)))
    assert not model.built


def test_input_dropout_and_dropouts_in_a_row_are_layers_of_their_own():
    # a Dropout first (input dropout) or after another is a layer; after a Dense it is folded
    model = bp.Sequential([bp.Dropout(0.2), bp.Dense(3), bp.Dropout(0.5), bp.Dropout(0.5),
                           bp.Dense(3, activation="softmax")], seed=0).build(4)
    assert [type(layer).__name__ for layer in model.layers] == ["Dropout", "Dense", "Dropout",
                                                                 "Dense"]
    assert [op["kind"] for op in model._passes.ops] == ["dropout", "dense", "dropout",
                                                        "dropout", "dense"]
    X, y = data(20)
    model.fit(X, y, epochs=2, batch_size=5, verbose=0)
    assert np.isfinite(model.get_flat_params()).all()


def _net(rate=0.5, dtype="float64", seed=0, second=0.25):
    return bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dropout(rate),
                          bp.Dense(6, activation="relu"), bp.Dropout(second),
                          bp.Dense(3, activation="softmax")], dtype=dtype, seed=seed)


def _plain(dtype="float64", seed=0):
    return bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(6, activation="relu"),
                          bp.Dense(3, activation="softmax")], dtype=dtype, seed=seed)


def test_rate_zero_is_no_layer_bit_for_bit():
    X, y = data(40)
    a, b = _net(rate=0.0, second=0.0), _plain()
    for m in (a, b):
        m.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(a.get_flat_params(), b.get_flat_params())
    assert a.history.history == b.history.history


def test_one_step_is_the_mathematics_written_out():
    """delta[i] = ((delta[i+1] @ W[i+1].T) * mask[i] / (1 - rate)) * sigma'(z_in[i])."""
    X, y = data(16)
    Y = np.eye(3)[y]
    model = _net()
    model.build(4)
    Ws = [L.W.copy() for L in model.layers]
    bs = [L.b.copy() for L in model.layers]
    rates = [0.5, 0.25]
    masks = [ref.dropout_mask(L.dropout._key, 0, 16, L.units, r)  # the first step is batch 0
             for L, r in zip(model.layers[:2], rates)]
    z_in0 = X @ Ws[0] + bs[0]
    a0 = np.tanh(z_in0) * masks[0] / 0.5
    z_in1 = a0 @ Ws[1] + bs[1]
    a1 = np.maximum(z_in1, 0) * masks[1] / 0.75
    f_in = a1 @ Ws[2] + bs[2]
    f_out = np.exp(f_in - f_in.max(1, keepdims=True))
    f_out /= f_out.sum(1, keepdims=True)
    d2 = (f_out - Y) / 16
    d1 = ((d2 @ Ws[2].T) * masks[1] / 0.75) * (z_in1 > 0)
    d0 = ((d1 @ Ws[1].T) * masks[0] / 0.5) * (1 - np.tanh(z_in0) ** 2)
    grads = [(X.T @ d0, d0.sum(0)), (a0.T @ d1, d1.sum(0)), (a1.T @ d2, d2.sum(0))]
    loss = -np.mean(np.log(f_out[np.arange(16), y]))
    h = model.fit(X, y, optimizer=bp.SGD(0.1), batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert h.history["loss"] == [pytest.approx(loss, rel=1e-12)]
    for L, W, b, (gW, gb) in zip(model.layers, Ws, bs, grads):
        np.testing.assert_allclose(L.W, W - 0.1 * gW, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(L.b, b - 0.1 * gb, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_and_python_twin_train_alike(dtype):
    X, y = data(50)
    runs = []
    for compiled in (True, False):
        model = _net(dtype=dtype)
        model.build(4)
        model._passes.compiled = compiled
        h = model.fit(X, y, optimizer=bp.Adam(1e-2), epochs=3, batch_size=8, accumulate=2,
                      verbose=0)
        runs.append((model.get_flat_params(), h.history["loss"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    plain = _plain(dtype=dtype)
    plain.fit(X, y, optimizer=bp.Adam(1e-2), epochs=3, batch_size=8, accumulate=2, verbose=0)
    assert not np.array_equal(plain.get_flat_params(), runs[0][0])


def test_training_gradients_match_central_differences_with_the_mask_fixed():
    X, y = data(12)
    model = _net()
    model.build(4)
    passes = model._passes
    loss, Xc, Y, w = bp._passes.prepare(model, X, y, None)
    scale = bp.losses.default_scale(loss, *Y.shape)
    ws = passes.new_workspace(12)
    grads = np.zeros_like(model._params)
    passes.backward(Xc, Y, w, ws, loss, scale, 0.0, grads, 1, draw=5)
    assert ws.mask[1][:12].min() == 0  # some units are dropped (operation 1: the Dropout)

    def loss_at(params):  # the same draw: the same masks
        saved = model._params.copy()
        model._params[:] = params
        value = passes.backward(Xc, Y, w, ws, loss, scale, 0.0, np.zeros_like(grads), 1,
                                draw=5)
        model._params[:] = saved
        return value

    h = 1e-6
    params = model._params.copy()
    for k in range(0, params.size, 7):
        plus, minus = params.copy(), params.copy()
        plus[k] += h
        minus[k] -= h
        numeric = (loss_at(plus) - loss_at(minus)) / (2 * h)
        assert numeric == pytest.approx(grads[k], rel=1e-5, abs=1e-8)


def test_predict_evaluate_and_gradients_are_inference_mode():
    X, y = data(30)
    model = _net()
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    twin = _plain()
    twin.build(4)
    twin.set_flat_params(model.get_flat_params())
    np.testing.assert_array_equal(model.predict(X), twin.predict(X))
    assert model.evaluate(X, y) == twin.evaluate(X, y)
    for (gW, gb), (tW, tb) in zip(model.gradients(X, y), twin.gradients(X, y)):
        np.testing.assert_array_equal(gW, tW)
        np.testing.assert_array_equal(gb, tb)
    # error_signals has an entry per operation: the Dense layers' are the twin's, and in
    # inference the Dropout's g passes through unchanged
    kinds = [op["kind"] for op in model._passes.ops]
    assert kinds == ["dense", "dropout", "dense", "dropout", "dense"]
    dense = [a for a, kind in zip(model.error_signals, kinds) if kind == "dense"]
    for a, b in zip(dense, twin.error_signals, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(X), model.predict(X))


def test_saved_model_keeps_its_dropout_and_trains_on_alike(tmp_path):
    X, y = data(40)
    model = _net()
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    back = bp.load(tmp_path / "m.npz")
    assert [L.dropout.get_config() if L.dropout else None for L in back.layers] == \
        [L.dropout.get_config() if L.dropout else None for L in model.layers]
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    back.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.get_flat_params(), back.get_flat_params())


def test_a_given_seed_fixes_the_masks_whatever_the_model_seed():
    X, y = data(40)

    def init(shape, rng):  # the same weights whatever the model's seed
        return np.linspace(-1, 1, shape[0] * shape[1]).reshape(shape)

    def trained(model_seed, dropout_seed):
        m = bp.Sequential([bp.Dense(8, activation="tanh", kernel_initializer=init),
                           bp.Dropout(0.5, seed=dropout_seed),
                           bp.Dense(3, activation="softmax", kernel_initializer=init)],
                          seed=model_seed, dtype="float64")
        m.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        return m.get_flat_params()

    np.testing.assert_array_equal(trained(0, 42), trained(1, 42))
    assert not np.array_equal(trained(0, None), trained(1, None))  # drawn from the model's seed
    np.testing.assert_array_equal(trained(3, None), trained(3, None))
