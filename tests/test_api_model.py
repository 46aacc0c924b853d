"""The model API without training loops: construction, list behaviour, lazy build, repr and
summary, parameter assignment, dtypes, predict/evaluate, the cached passes (error_signals, z_in,
z_out) against the NumPy reference, and every error, each matched by regex with the model left
exactly as it was."""

import re

import numpy as np
import pytest

import bp
from bp import _reference as R

# Tolerances against the float64 NumPy reference, per model dtype.
TOL = {
    np.float32: dict(rtol=2e-5, atol=1e-6),
    np.float64: dict(rtol=1e-12, atol=1e-14),
}
DTYPES = [np.float32, np.float64]


def classifier(dtype=np.float32, seed=0, **kw):
    return bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(3, activation="softmax")],
                         dtype=dtype, seed=seed, **kw)


def data(n=12, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def reference_backward(model, X, Y, loss, sample_weight=None, scale=None, params=None):
    """bp._reference.backward on the model's weights (or on a flat `params` vector), in float64."""
    Ws, bs = weights_of(model, params)
    return R.backward(np.asarray(X, model.dtype).astype(np.float64), Y, Ws, bs,
                      [L.activation for L in model], loss, model[0].alpha, sample_weight, scale)


def weights_of(model, params=None):
    """Per-layer (W, b) in float64, from the model or from a flat parameter vector."""
    flat = model.get_flat_params() if params is None else params
    Ws, bs, offset = [], [], 0
    for L in model:
        n_in = L.input_dim
        Ws.append(flat[offset:offset + n_in * L.units].reshape(n_in, L.units).astype(np.float64))
        offset += n_in * L.units
        if L.use_bias:
            bs.append(flat[offset:offset + L.units].astype(np.float64))
            offset += L.units
        else:
            bs.append(None)
    return Ws, bs


# ---- construction ---------------------------------------------------------------------------------


def test_dense_defaults():
    layer = bp.Dense(3)
    assert (layer.units, layer.activation, layer.use_bias, layer.alpha) == (3, "identity", True, 0.01)
    assert layer.input_dim is None and not layer.built and layer.n_params is None
    with pytest.raises(ValueError, match=r"not built yet.*input_dim"):
        layer.W
    with pytest.raises(ValueError, match=r"not built yet"):
        layer.b


@pytest.mark.parametrize("activation, initializer", [
    ("relu", "he_normal"), ("leaky_relu", "he_normal"), ("gelu", "he_normal"),
    ("sigmoid", "glorot_uniform"), ("tanh", "glorot_uniform"), ("softmax", "glorot_uniform"),
    ("identity", "glorot_uniform"),
])
def test_default_initializer_follows_the_activation(activation, initializer):
    assert bp.Dense(4, activation=activation).kernel_initializer == initializer
    # an explicit choice wins
    assert bp.Dense(4, activation=activation, kernel_initializer="zeros").kernel_initializer == "zeros"


@pytest.mark.parametrize("activation, initializer", [
    ("tanh", "glorot_uniform"), ("relu", "he_normal"), (None, "glorot_normal"), (None, "he_uniform"),
])
def test_initializer_distributions(activation, initializer):
    # 300 x 200 = 60000 draws: the sample std is within 2% of its target with overwhelming odds.
    fan_in, fan_out = 300, 200
    layer = bp.Dense(fan_out, activation=activation or "identity",
                     kernel_initializer=None if activation else initializer)
    model = bp.Sequential([layer], dtype=np.float64, seed=3, input_dim=fan_in).build()
    W = layer.W
    assert layer.kernel_initializer == initializer
    std = {"glorot_uniform": np.sqrt(2 / (fan_in + fan_out)), "glorot_normal": np.sqrt(2 / (fan_in + fan_out)),
           "he_uniform": np.sqrt(2 / fan_in), "he_normal": np.sqrt(2 / fan_in)}[initializer]
    assert abs(W.std() / std - 1) < 0.02
    assert abs(W.mean()) < 4 * std / np.sqrt(W.size)
    if initializer.endswith("uniform"):
        assert np.abs(W).max() <= std * np.sqrt(3)  # U(-a, a) has std a / sqrt(3)
    np.testing.assert_array_equal(layer.b, 0)
    assert model.n_params == fan_in * fan_out + fan_out


def test_zeros_and_callable_initializers():
    seen = []

    def init(shape, rng):
        seen.append((shape, isinstance(rng, np.random.Generator)))
        return np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape)  # ints are cast

    model = bp.Sequential([bp.Dense(3, kernel_initializer=init), bp.Dense(2, kernel_initializer="zeros")],
                          input_dim=2).build()
    assert seen == [((2, 3), True)]
    np.testing.assert_array_equal(model[0].W, np.arange(6).reshape(2, 3))
    assert model[0].W.dtype == np.float32
    np.testing.assert_array_equal(model[1].W, 0)


def test_initialisation_is_seeded():
    def params(seed):
        return classifier(seed=seed, input_dim=4).build().get_flat_params()

    np.testing.assert_array_equal(params(7), params(7))
    assert not np.array_equal(params(7), params(8))
    assert not np.array_equal(params(None), params(None))
    # numpy integers are seeds too
    np.testing.assert_array_equal(params(np.int64(7)), params(7))


# ---- a list of layers -----------------------------------------------------------------------------


def test_list_behaviour():
    layers = [bp.Dense(5, activation="relu"), bp.Dense(4, activation="tanh"),
              bp.Dense(3, activation="softmax")]
    model = bp.Sequential(layers)
    assert len(model) == 3
    assert list(model) == layers
    assert model[0] is layers[0] and model[-1] is layers[2]
    assert model.layers == layers
    with pytest.raises(IndexError):
        model[3]
    assert len(bp.Sequential()) == 0


def test_add_appends():
    model = bp.Sequential(dtype="float64", seed=1)
    first, second = bp.Dense(4, activation="relu"), bp.Dense(2, activation="softmax")
    model.add(first)
    model.add(second)
    assert list(model) == [first, second]
    # add gives the same model as the constructor
    X, _ = data(d=3)
    same = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(2, activation="softmax")],
                         dtype="float64", seed=1)
    np.testing.assert_array_equal(model.predict(X), same.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
def test_slice_of_a_built_model_is_an_independent_sequential(dtype):
    model = bp.Sequential([bp.Dense(5, activation="relu"), bp.Dense(4, activation="leaky_relu", alpha=0.2),
                           bp.Dense(3, activation="softmax", use_bias=False, name="out")],
                          dtype=dtype, seed=4)
    X, _ = data(d=4)
    full = model.predict(X)
    head, tail = model[:1], model[1:]
    assert isinstance(head, bp.Sequential) and isinstance(tail, bp.Sequential)
    assert (len(head), len(tail)) == (1, 2)
    assert head.built and tail.built and head.dtype == tail.dtype == model.dtype
    assert tail.seed == model.seed
    assert [L.get_config() for L in tail] == [L.get_config() for L in model.layers[1:]]
    for src, dst in zip(model.layers[1:], tail):
        assert src is not dst
        np.testing.assert_array_equal(dst.W, src.W)
        assert not np.shares_memory(dst.W, src.W)
    # the two halves compose to the whole
    np.testing.assert_allclose(tail.predict(head.predict(X)), full, **TOL[dtype])
    # a slice owns its parameters: changing it leaves the original alone
    tail[0].W = np.zeros_like(tail[0].W)
    np.testing.assert_array_equal(model.predict(X), full)
    assert not np.array_equal(tail[0].W, model[1].W)


def test_slice_of_an_unbuilt_model_keeps_every_setting():
    def init(shape, rng):
        return np.full(shape, 0.5)

    model = bp.Sequential([bp.Dense(4, kernel_initializer=init), bp.Dense(2, activation="sigmoid")],
                          dtype="float64", seed=2, input_dim=3)
    head = model[:1]
    assert not head.built
    assert head[0].kernel_initializer is init
    assert head.input_dim == 3  # the slice starts at the input, so the input width carries over
    head.build()
    np.testing.assert_array_equal(head[0].W, 0.5)
    assert model[1:].input_dim is None  # its input is layer 0's output: learned at build


def test_bad_slices():
    model = classifier()
    with pytest.raises(IndexError, match=r"slice of a Sequential must keep at least one layer"):
        model[2:]
    model.build(4)
    # every other layer of a built model does not chain: 4 -> 5 then a layer expecting 5 inputs
    deep = bp.Sequential([bp.Dense(5), bp.Dense(6), bp.Dense(7)], input_dim=4).build()
    with pytest.raises(ValueError, match=r"layer 1 .* expects input_dim=6 but receives 5 features"):
        deep[::2]


# ---- lazy build -----------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["predict", "evaluate", "gradients", "fit", "backward"])
def test_lazy_build_takes_the_input_width_from_the_data(call):
    model = classifier()
    assert not model.built and model.n_params == 0 and model.input_dim is None
    X, y = data(d=6)
    if call == "predict":
        model.predict(X)
    elif call == "fit":
        model.fit(X, y, epochs=1, verbose=0)
    else:
        getattr(model, call)(X, y)
    assert model.built and model.input_dim == 6
    assert [L.input_dim for L in model] == [6, 5]
    assert model[0].W.shape == (6, 5) and model[1].W.shape == (5, 3)
    assert model[0].b.shape == (5,)
    assert model.n_params == 6 * 5 + 5 + 5 * 3 + 3


@pytest.mark.parametrize("where", ["layer", "model"])
def test_input_dim_builds_without_data(where):
    if where == "layer":
        model = bp.Sequential([bp.Dense(5, activation="tanh", input_dim=4),
                               bp.Dense(3, activation="softmax")])
    else:
        model = classifier(input_dim=4)
    assert not model.built
    assert model.build() is model and model.built
    assert model.build() is model  # building twice is a no-op
    params = model.get_flat_params()
    model.build(4)
    np.testing.assert_array_equal(model.get_flat_params(), params)
    with pytest.raises(ValueError, match=r"X must have 4 features .* Received: X with shape \(2, 3\)"):
        model.predict(np.zeros((2, 3)))


def test_build_errors_leave_the_model_unbuilt():
    with pytest.raises(ValueError, match=r"needs at least one layer"):
        bp.Sequential().build(3)
    with pytest.raises(ValueError, match=r"input width is unknown"):
        classifier().build()
    with pytest.raises(ValueError, match=r"layer 1 .* expects input_dim=7 but receives 5 features"):
        bp.Sequential([bp.Dense(5), bp.Dense(2, input_dim=7)]).build(3)
    model = bp.Sequential([bp.Dense(5, input_dim=4)])
    with pytest.raises(ValueError, match=r"layer 0 .* expects input_dim=4 but receives 3 features"):
        model.build(3)
    assert not model.built


def test_failed_build_changes_nothing():
    # the second layer's initializer is wrong: the first layer must not be left half-built, and
    # the seeded generator must not have advanced (a later build gives the fresh model's weights)
    calls = []

    def bad(shape, rng):
        calls.append(shape)
        return np.zeros((1, 1)) if len(calls) == 1 else np.ones(shape)

    model = bp.Sequential([bp.Dense(4), bp.Dense(3, kernel_initializer=bad)], seed=5)
    with pytest.raises(ValueError, match=r"kernel_initializer must return shape \(4, 3\)\. "
                                         r"Received: shape \(1, 1\)"):
        model.build(2)
    assert not model.built
    assert not model[0].built and model[0].input_dim is None
    model.build(2)
    fresh = bp.Sequential([bp.Dense(4), bp.Dense(3, kernel_initializer=lambda s, r: np.ones(s))],
                          seed=5).build(2)
    np.testing.assert_array_equal(model.get_flat_params(), fresh.get_flat_params())


# ---- repr and summary -----------------------------------------------------------------------------


def test_dense_repr():
    assert repr(bp.Dense(64, activation="relu")) == "Dense(64, activation='relu')"
    assert repr(bp.Dense(3)) == "Dense(3, activation='identity')"
    assert (repr(bp.Dense(8, activation="leaky_relu", alpha=0.2, use_bias=False, input_dim=4, name="h"))
            == "Dense(8, activation='leaky_relu', use_bias=False, alpha=0.2, input_dim=4, name='h')")


def test_sequential_repr_tells_the_architecture():
    model = bp.Sequential([bp.Dense(5, activation="relu"), bp.Dense(3, activation="softmax")],
                          dtype="float64")
    assert repr(model) == ("Sequential(dtype='float64') [\n"
                           "  (0) Dense(5, activation='relu')\n"
                           "  (1) Dense(3, activation='softmax')\n"
                           "]")
    model.build(4)
    assert repr(model) == ("Sequential(dtype='float64', input_dim=4) [\n"
                           "  (0) Dense(5, activation='relu', input_dim=4)\n"
                           "  (1) Dense(3, activation='softmax', input_dim=5)\n"
                           "]")
    assert repr(bp.Sequential()) == "Sequential(dtype='float32') [\n]"


def _summary_rows(text):
    """{layer name: params} and the total, read back from summary()'s table."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+\(None, (\d+)\)\s+(\S+)\s+([\d,?]+)\s*$", line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), m.group(3), m.group(4))
    total = re.search(r"Total params: (.*?)  \((float\d\d)\)", text)
    return rows, total.group(1), total.group(2)


def test_summary_counts_parameters(capsys):
    model = bp.Sequential([bp.Dense(128, activation="relu"), bp.Dense(64, activation="relu"),
                           bp.Dense(10, activation="softmax", use_bias=False, name="out")],
                          input_dim=64)
    text = model.summary()
    assert capsys.readouterr().out == text + "\n"
    rows, total, dtype = _summary_rows(text)
    assert rows == {"dense_0": (128, "relu", "8,320"), "dense_1": (64, "relu", "8,256"),
                    "out": (10, "softmax", "640")}
    assert (total, dtype) == ("17,216", "float32")
    model.build()
    assert model.n_params == 17216 == sum(L.n_params for L in model)
    assert _summary_rows(model.summary())[0] == rows


def test_summary_of_a_model_without_input_width(capsys):
    model = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(3, activation="softmax")],
                          dtype="float64")
    rows, total, dtype = _summary_rows(model.summary())
    assert rows == {"dense_0": (4, "relu", "?"), "dense_1": (3, "softmax", "15")}
    assert (total, dtype) == ("? (not built)", "float64")


def test_summary_to_a_file(tmp_path, capsys):
    path = tmp_path / "summary.txt"
    with open(path, "w") as f:
        text = classifier(input_dim=4).summary(file=f)
    assert capsys.readouterr().out == ""
    assert path.read_text() == text + "\n"


# ---- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_W_and_b_are_views_into_the_flat_parameters(dtype):
    model = classifier(dtype=dtype, input_dim=4).build()
    W, b = model[1].W, model[1].b
    assert W.dtype == dtype and b.dtype == dtype
    new_W = np.arange(15, dtype=np.float64).reshape(5, 3) / 10
    model[1].W = new_W
    model[1].b = [1, 2, 3]  # a list of ints: cast
    flat = model.get_flat_params()
    np.testing.assert_array_equal(flat[25:40], new_W.astype(dtype).ravel())
    np.testing.assert_array_equal(flat[40:], [1, 2, 3])
    assert W is model[1].W or np.shares_memory(W, model[1].W)  # the old view sees the new values
    np.testing.assert_array_equal(W, new_W.astype(dtype))
    # writing through the view is writing the model
    model[0].b[...] = 0.25
    np.testing.assert_array_equal(model.get_flat_params()[20:25], 0.25)
    # and the forward pass uses what was written
    X, _ = data()
    ref = R.forward(X.astype(dtype).astype(np.float64), *weights_of(model), ["tanh", "softmax"])[1][-1]
    np.testing.assert_allclose(model.predict(X), ref, **TOL[dtype])


def test_flat_params_round_trip():
    model = classifier(input_dim=4).build()
    flat = model.get_flat_params()
    flat[...] = np.arange(flat.size)
    assert not np.array_equal(model.get_flat_params(), flat)  # get_flat_params is a copy
    model.set_flat_params(flat.astype(np.float64))
    np.testing.assert_array_equal(model.get_flat_params(), flat)
    np.testing.assert_array_equal(model[0].W.ravel(), flat[:20])
    grads = model.get_flat_grads()
    assert grads.shape == flat.shape and not grads.flags.writeable


# ---- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_dtype", [np.float32, np.float64, np.int64, np.int32, np.uint8])
def test_dtype_is_the_model_s_and_inputs_are_cast(dtype, input_dtype):
    model = classifier(dtype=dtype)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 5, (10, 4)).astype(input_dtype)
    y = rng.integers(0, 3, 10)
    out = model.predict(X)
    assert out.dtype == dtype
    assert model.get_flat_params().dtype == dtype
    np.testing.assert_array_equal(out, model.predict(X.astype(dtype)))
    grads = model.gradients(X, y)
    assert all(gW.dtype == dtype and gb.dtype == dtype for gW, gb in grads)
    assert all(d.dtype == dtype for d in model.error_signals)
    assert isinstance(model.evaluate(X, y)["loss"], float)


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.dtype("float64")])
def test_dtype_spellings(dtype):
    assert bp.Sequential(dtype=dtype).dtype == np.dtype(dtype)


def test_layouts_and_containers_are_accepted():
    model = classifier(dtype=np.float64)
    X, y = data()
    expected = model.predict(X)
    read_only = X.copy()
    read_only.flags.writeable = False
    strided = np.zeros((12, 8))
    strided[:, ::2] = X
    for variant in (np.asfortranarray(X), read_only, strided[:, ::2], X.tolist()):
        np.testing.assert_array_equal(model.predict(variant), expected)


# ---- predict and evaluate -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_is_the_reference_forward_pass(dtype):
    model = bp.Sequential([bp.Dense(6, activation="gelu"), bp.Dense(5, activation="leaky_relu", alpha=0.1),
                           bp.Dense(3, activation="softmax")], dtype=dtype, seed=1)
    X, _ = data(n=17)
    out = model.predict(X)
    assert out.shape == (17, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1, **TOL[dtype])
    ref = R.forward(X.astype(dtype).astype(np.float64), *weights_of(model),
                    ["gelu", "leaky_relu", "softmax"], alpha=0.1)[1][-1]
    np.testing.assert_allclose(out, ref, **TOL[dtype])
    np.testing.assert_allclose(model.predict(X, batch_size=5), out, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_evaluate_reports_the_reference_loss_and_accuracy(dtype):
    model = classifier(dtype=dtype)
    X, y = data(n=30)
    Y = np.eye(3)[y]
    result = model.evaluate(X, y)  # the loss follows from the softmax output
    assert set(result) == {"loss", "accuracy"}
    L, *_ = reference_backward(model, X, Y, "cross_entropy")
    np.testing.assert_allclose(result["loss"], L, **TOL[dtype])
    # torch.nn.CrossEntropyLoss(): the mean over samples of -log softmax(f_in)[label]
    p = model.predict(X).astype(np.float64)
    np.testing.assert_allclose(result["loss"], -np.mean(np.log(p[np.arange(30), y])), **TOL[dtype])
    assert result["accuracy"] == np.mean(model.predict(X).argmax(axis=1) == y)
    # one-hot rows give the same as labels
    assert model.evaluate(X, Y) == result
    # weighted: the loss is sum_i w_i l_i / N, the accuracy a weighted mean
    w = np.linspace(0, 2, 30)
    weighted = model.evaluate(X, y, sample_weight=w)
    Lw, *_ = reference_backward(model, X, Y, "cross_entropy", sample_weight=w)
    np.testing.assert_allclose(weighted["loss"], Lw, **TOL[dtype])
    hit = model.predict(X).argmax(axis=1) == y
    w = w.astype(dtype)  # the weights are held in the model's dtype
    np.testing.assert_allclose(weighted["accuracy"], np.sum(w * hit) / np.sum(w), **TOL[dtype])


def test_evaluate_regression_and_binary():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 3))
    reg = bp.Sequential([bp.Dense(2)], dtype="float64", seed=0)
    y = rng.standard_normal((10, 2))
    result = reg.evaluate(X, y)
    assert set(result) == {"loss"}
    np.testing.assert_allclose(result["loss"], np.mean((reg.predict(X) - y) ** 2), rtol=1e-12)
    binary = bp.Sequential([bp.Dense(1, activation="sigmoid")], dtype="float64", seed=0)
    t = rng.integers(0, 2, 10)
    result = binary.evaluate(X, t)
    assert set(result) == {"loss", "accuracy"}
    p = binary.predict(X).ravel()
    assert result["accuracy"] == np.mean((p >= 0.5) == (t == 1))
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))  # BCELoss, mean
    np.testing.assert_allclose(result["loss"], bce, rtol=1e-10)


# ---- the cached passes ----------------------------------------------------------------------------


def test_no_cached_passes_before_a_backward_pass():
    model = classifier()
    X, y = data()
    model.predict(X)
    model.evaluate(X, y)
    assert model.error_signals is None and model.z_in is None and model.z_out is None


def _check_cached(model, X, Y, loss, scale=None, params=None, sample_weight=None):
    dtype = model.dtype.type
    _, deltas, _, _ = reference_backward(model, X, Y, loss, sample_weight, scale, params)
    z_ins, z_outs = R.forward(np.asarray(X, dtype).astype(np.float64), *weights_of(model, params),
                              [L.activation for L in model], model[0].alpha)
    for name, got, want in [("error_signals", model.error_signals, deltas),
                            ("z_in", model.z_in, z_ins), ("z_out", model.z_out, z_outs)]:
        assert isinstance(got, tuple) and len(got) == len(model), name
        for a, r in zip(got, want):
            assert a.dtype == dtype and a.shape == r.shape, name
            assert not a.flags.writeable, name
            with pytest.raises(ValueError, match="read-only"):
                a[0, 0] = 1
            np.testing.assert_allclose(a, r, **TOL[dtype], err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cached_passes_after_gradients_and_backward(dtype):
    model = bp.Sequential([bp.Dense(6, activation="sigmoid"), bp.Dense(4, activation="relu"),
                           bp.Dense(3, activation="softmax")], dtype=dtype, seed=0)
    X, y = data(n=9)
    Y = np.eye(3)[y]
    model.gradients(X, y)
    _check_cached(model, X, Y, "cross_entropy")
    # backward with total_samples: the deltas carry the scale 1/total_samples
    X2, y2 = data(n=5, seed=1)
    model.zero_grad()
    model.backward(X2, y2, total_samples=20)
    _check_cached(model, X2, np.eye(3)[y2], "cross_entropy", scale=1 / 20)
    # predict and evaluate leave them alone
    before = [a.copy() for a in model.error_signals]
    model.predict(X)
    model.evaluate(X, y)
    for a, b in zip(model.error_signals, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cached_passes_after_fit_are_the_last_batch(dtype):
    # 23 rows in batches of 8: the last batch has rows 16..22 and was computed with the weights
    # as they were after the second update, which a callback records.
    model = bp.Sequential([bp.Dense(4, activation="tanh"), bp.Dense(2, activation="sigmoid")],
                          dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((23, 3))
    y = rng.integers(0, 2, (23, 2)).astype(float)
    model.fit(X, y, epochs=1, batch_size=8, optimizer=bp.SGD(0.5), verbose=0)
    snaps = []

    class Snapshot(bp.Callback):
        def on_batch_end(self, batch, logs=None):
            snaps.append(self.model.get_flat_params())

    model.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=bp.SGD(0.5), verbose=0,
              callbacks=[Snapshot()])
    assert len(snaps) == 6
    _check_cached(model, X[16:], y[16:], "binary_cross_entropy", params=snaps[-2])


# ---- errors: each names what was expected and what was received -----------------------------------

CONSTRUCTION_ERRORS = [
    (lambda: bp.Dense(0), ValueError, r"units must be a positive integer\. Received: units=0"),
    (lambda: bp.Dense(-2), ValueError, r"Received: units=-2"),
    (lambda: bp.Dense(2.5), ValueError, r"Received: units=2\.5"),
    (lambda: bp.Dense(True), ValueError, r"Received: units=True"),
    (lambda: bp.Dense("3"), ValueError, r"Received: units='3'"),
    (lambda: bp.Dense(3, activation="swish"), ValueError, r"Unknown activation 'swish'\. Valid values: .*'relu'"),
    (lambda: bp.Dense(3, activation=None), TypeError, r"activation must be a string\. Received: None"),
    (lambda: bp.Dense(3, kernel_initializer="orthogonal"), ValueError,
     r"Unknown kernel_initializer 'orthogonal'\. Valid values: .*'he_normal'"),
    (lambda: bp.Dense(3, alpha=-0.1), ValueError, r"alpha must be a finite number in \[0\.0, inf\)\. Received: alpha=-0\.1"),
    (lambda: bp.Dense(3, alpha=float("nan")), ValueError, r"Received: alpha=nan"),
    (lambda: bp.Dense(3, input_dim=0), ValueError, r"input_dim must be a positive integer\. Received: input_dim=0"),
    (lambda: bp.Sequential(dtype="float16"), TypeError, r"dtype must be float32 or float64\. Received: dtype='float16'"),
    (lambda: bp.Sequential(dtype="int32"), TypeError, r"Received: dtype='int32'"),
    (lambda: bp.Sequential(seed="0"), TypeError, r"seed must be an int or None\. Received: seed='0'"),
    (lambda: bp.Sequential(seed=1.5), TypeError, r"Received: seed=1\.5"),
    (lambda: bp.Sequential(seed=True), TypeError, r"Received: seed=True"),
    (lambda: bp.Sequential(input_dim=-1), ValueError, r"Received: input_dim=-1"),
    (lambda: bp.Sequential([bp.SGD()]), TypeError, r"Sequential holds bp\.Dense and bp\.Dropout layers\. Received: SGD"),
    (lambda: bp.Sequential([bp.Dense(2), "relu"]), TypeError, r"Received: str"),
]


@pytest.mark.parametrize("make, exc, match", CONSTRUCTION_ERRORS)
def test_construction_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_add_errors_leave_the_model_unchanged():
    model = bp.Sequential([bp.Dense(3)])
    other = bp.Sequential([bp.Dense(2)])
    alone = bp.Dense(2)
    alone(np.zeros((1, 3)))  # built on its own
    for layer, exc, match in [
        (bp.SGD(), TypeError, r"Sequential holds bp\.Dense and bp\.Dropout layers\. Received: SGD"),
        (other[0], ValueError, r"already belongs to another model"),
        (model[0], ValueError, r"already belongs to another model"),
        (alone, ValueError, r"was built on its own; add an unbuilt layer"),
    ]:
        with pytest.raises(exc, match=match):
            model.add(layer)
        assert len(model) == 1
    model.build(4)
    with pytest.raises(ValueError, match=r"cannot add a layer to a built model"):
        model.add(bp.Dense(2))
    assert len(model) == 1


def _state(model):
    """Everything a rejected call must leave alone."""
    opt = model.optimizer
    return {
        "built": model.built,
        "input_dim": model.input_dim,
        "layers": [(L.input_dim, L.built) for L in model],
        "params": None if not model.built else model.get_flat_params(),
        "grads": None if not model.built else model.get_flat_grads().copy(),
        "loss": model.loss,
        "optimizer": opt,
        "opt_state": None if opt is None else {k: np.array(v) for k, v in opt.state_dict().items()},
        "rng": model._rng.bit_generator.state,
        "history": getattr(model, "history", None),
        "last": None if model.error_signals is None else [d.copy() for d in model.error_signals],
    }


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if key in ("params", "grads"):
            assert (x is None) == (y is None), key
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=key)
        elif key == "opt_state":
            assert (x is None) == (y is None)
            if x is not None:
                assert x.keys() == y.keys()
                for k in x:
                    np.testing.assert_array_equal(x[k], y[k], err_msg=k)
        elif key == "last":
            assert (x is None) == (y is None)
            for u, v in zip(x or [], y or []):
                np.testing.assert_array_equal(u, v)
        elif key in ("optimizer", "history"):
            assert x is y, key
        else:
            assert x == y, key


X0, y0 = data(n=20, d=4)
BAD_X = X0.copy()
BAD_X[2, 1] = np.nan


def fit(**kw):
    kw.setdefault("verbose", 0)
    return lambda m: m.fit(X0, y0, **kw)


# (call on the model, exception, regex). Each runs on a trained model and on a fresh, unbuilt one.
CALL_ERRORS = {
    "epochs 0": (fit(epochs=0), ValueError, r"epochs must be a positive integer\. Received: epochs=0"),
    "epochs float": (fit(epochs=1.5), TypeError, r"epochs must be a positive integer\. Received: epochs=1\.5"),
    "batch_size 0": (fit(batch_size=0), ValueError, r"Received: batch_size=0"),
    "accumulate 0": (fit(accumulate=0), ValueError, r"Received: accumulate=0"),
    "verbose 3": (fit(verbose=3), ValueError, r"verbose must be 0, 1 or 2\. Received: verbose=3"),
    "on_nan": (fit(on_nan="ignore"), ValueError, r"on_nan must be 'raise' or 'stop'\. Received: on_nan='ignore'"),
    "loss unknown": (fit(loss="hinge"), ValueError, r"Unknown loss 'hinge'\. Valid values: .*'cross_entropy'"),
    "loss type": (fit(loss=len), TypeError, r"loss must be a string"),
    "loss pair": (fit(loss="binary_cross_entropy"), ValueError,
                  r"loss 'binary_cross_entropy' needs an output activation in \('sigmoid'\)\. "
                  r"Received: output activation 'softmax'"),
    "optimizer name": (fit(optimizer="rmsprop"), ValueError, r"Unknown optimizer 'rmsprop'\. Valid values: 'sgd'"),
    "optimizer type": (fit(optimizer=0.1), TypeError, r"optimizer must be a bp\.Optimizer .* Received: float"),
    "X 1-D": (lambda m: m.fit(X0[0], y0[:1], verbose=0), ValueError, r"X must be 2-D\. Received: X with shape \(4,\)"),
    "X empty": (lambda m: m.fit(np.zeros((0, 4)), y0[:0], verbose=0), ValueError, r"X is empty"),
    "X no features": (lambda m: m.fit(np.zeros((3, 0)), y0[:3], verbose=0), ValueError, r"X has no features"),
    "X nan": (lambda m: m.fit(BAD_X, y0, verbose=0), ValueError,
              r"X must contain only finite values\. Received: nan at row, column \(2, 1\)"),
    "X bool": (lambda m: m.fit(X0 > 0, y0, verbose=0), TypeError, r"X must be an array of real numbers .* dtype bool"),
    "X strings": (lambda m: m.fit(X0.astype(str), y0, verbose=0), TypeError, r"X must be an array of real numbers"),
    "X ragged": (lambda m: m.fit([[1, 2], [3]], y0[:2], verbose=0), TypeError, r"X could not be read as an array"),
    "y length": (lambda m: m.fit(X0, y0[:-1], verbose=0), ValueError,
                 r"X and y must have the same number of samples\. Received: 20 samples in X and 19 in y"),
    "y 3-D": (lambda m: m.fit(X0, y0.reshape(20, 1, 1), verbose=0), ValueError, r"y must be 1-D or 2-D"),
    "label range": (lambda m: m.fit(X0, np.where(np.arange(20) == 7, 3, y0), verbose=0), ValueError,
                    r"labels must be integers in \[0, 3\) for a model with 3 outputs\. Received: 3 at index 7"),
    "label negative": (lambda m: m.fit(X0, np.where(np.arange(20) == 4, -1, y0), verbose=0), ValueError,
                       r"Received: -1 at index 4"),
    "label fraction": (lambda m: m.fit(X0, np.where(np.arange(20) == 5, 0.5, y0), verbose=0), ValueError,
                       r"labels must be integers in \[0, 3\)\. Received: 0\.5 at index 5"),
    "label nan": (lambda m: m.fit(X0, np.where(np.arange(20) == 6, np.nan, y0), verbose=0), ValueError,
                  r"y must contain only finite values\. Received: nan at index 6"),
    "label strings": (lambda m: m.fit(X0, y0.astype(str), verbose=0), TypeError, r"labels must be integers"),
    "one-hot columns": (lambda m: m.fit(X0, np.eye(4)[y0], verbose=0), ValueError,
                        r"y must have 3 column\(s\), one per output of the model\. Received: y with shape \(20, 4\)"),
    "one-hot negative": (lambda m: m.fit(X0, np.eye(3)[y0] - 0.5, verbose=0), ValueError,
                         r"target rows must be non-negative .* Received: -0\.5 at row 0"),
    "sample_weight shape": (fit(sample_weight=np.ones(19)), ValueError,
                            r"sample_weight must have one entry per sample \(20\)\. Received: shape \(19,\)"),
    "sample_weight negative": (fit(sample_weight=np.where(np.arange(20) == 3, -1.0, 1.0)), ValueError,
                               r"sample_weight must be non-negative\. Received: -1\.0 at index 3"),
    "sample_weight nan": (fit(sample_weight=np.where(np.arange(20) == 3, np.nan, 1.0)), ValueError,
                          r"sample_weight must contain only finite values"),
    "validation_split 1": (fit(validation_split=1.0), ValueError,
                           r"validation_split must be a finite number in \[0\.0, 1\.0\)\. Received: validation_split=1\.0"),
    "validation_split negative": (fit(validation_split=-0.1), ValueError, r"Received: validation_split=-0\.1"),
    "validation_split tiny": (fit(validation_split=0.01), ValueError,
                              r"validation_split=0\.01 leaves 0 validation and 20 training samples"),
    "validation both": (fit(validation_split=0.2, validation_data=(X0, y0)), ValueError,
                        r"give validation_data or validation_split, not both"),
    "validation_data shape": (fit(validation_data=(X0,)), TypeError, r"validation_data must be \(X_val, y_val\)"),
    "validation_data X width": (fit(validation_data=(X0[:, :3], y0)), ValueError,
                                r"X_val must have 4 features .* Received: X_val with shape \(20, 3\)"),
    "validation_data y": (fit(validation_data=(X0, y0 + 3)), ValueError, r"Received: \d at index 0 of y_val"),
    "validation_data weights": (fit(validation_data=(X0, y0, -np.ones(20))), ValueError, r"sample_weight must be non-negative"),
    "callbacks": (fit(callbacks=[print]), TypeError,
                  r"callbacks must be bp\.Callback instances\. Received: builtin_function_or_method"),
    "predict width": (lambda m: m.predict(np.zeros((2, 5))), ValueError,
                      r"X must have 4 features \(the model's input width\)\. Received: X with shape \(2, 5\)"),
    "predict batch_size": (lambda m: m.predict(X0, batch_size=0), ValueError, r"Received: batch_size=0"),
    "evaluate y": (lambda m: m.evaluate(X0, y0 + 1), ValueError, r"Received: 3 at index"),
    "evaluate sample_weight": (lambda m: m.evaluate(X0, y0, sample_weight=np.ones(3)), ValueError, r"one entry per sample"),
    "gradients y": (lambda m: m.gradients(X0, y0[:5]), ValueError, r"same number of samples"),
    "gradients loss pair": (lambda m: m.gradients(X0, y0, loss="binary_cross_entropy"), ValueError, r"needs an output activation"),
    "backward total_samples": (lambda m: m.backward(X0, y0, total_samples=0), ValueError,
                               r"total_samples must be a positive integer\. Received: total_samples=0"),
    "backward total_samples type": (lambda m: m.backward(X0, y0, total_samples="20"), TypeError, r"total_samples='20'"),
    "compile loss": (lambda m: m.compile(loss="mae"), ValueError, r"Unknown loss 'mae'"),
    "compile pair": (lambda m: m.compile(loss="binary_cross_entropy"), ValueError, r"needs an output activation"),
    "compile optimizer": (lambda m: m.compile(loss="mse", optimizer="lbfgs"), ValueError, r"Unknown optimizer 'lbfgs'"),
}

BUILT_ONLY_ERRORS = {
    "step optimizer": (lambda m: m.step("lbfgs"), ValueError, r"Unknown optimizer 'lbfgs'"),
    "set_flat_params shape": (lambda m: m.set_flat_params(np.zeros(5)), ValueError,
                              r"params must have shape \(43,\)\. Received: shape \(5,\)"),
    "set_flat_params nan": (lambda m: m.set_flat_params(np.full(43, np.nan)), ValueError,
                            r"params must contain only finite values"),
    "set_flat_params 2-D": (lambda m: m.set_flat_params(np.zeros((43, 1))), ValueError, r"params must be 1-D"),
    "W shape": (lambda m: setattr(m[0], "W", np.zeros((5, 4))), ValueError,
                r"W must have shape \(4, 5\)\. Received: shape \(5, 4\)"),
    "W bool": (lambda m: setattr(m[0], "W", np.ones((4, 5), bool)), TypeError, r"W must be real numbers\. Received: dtype bool"),
    "W complex": (lambda m: setattr(m[0], "W", np.ones((4, 5), complex)), TypeError, r"dtype complex128"),
    "W object": (lambda m: setattr(m[0], "W", [[None] * 5] * 4), TypeError, r"dtype object"),
    "W inf": (lambda m: setattr(m[0], "W", np.full((4, 5), np.inf)), ValueError,
              r"W must contain only finite values\. Received: inf at row, column \(0, 0\)"),
    "b shape": (lambda m: setattr(m[1], "b", np.zeros(5)), ValueError, r"b must have shape \(3,\)\. Received: shape \(5,\)"),
    "b nan": (lambda m: setattr(m[1], "b", [0, np.nan, 0]), ValueError, r"b must contain only finite values\. Received: nan at index \(1\)"),
}

UNBUILT_ONLY_ERRORS = {
    "get_flat_params": (lambda m: m.get_flat_params(), ValueError, r"not built yet: call fit, predict or build"),
    "step": (lambda m: m.step(bp.SGD()), ValueError, r"not built yet"),
    "save": (lambda m: m.save("never-written.npz"), ValueError, r"not built yet"),
    "W": (lambda m: m[0].W, ValueError, r"is not built yet: its input width is taken from the data"),
    "W set": (lambda m: setattr(m[0], "W", np.zeros((4, 5))), ValueError, r"is not built yet"),
}


@pytest.fixture
def trained():
    model = classifier(seed=0)
    model.fit(X0, y0, epochs=2, batch_size=8, optimizer=bp.SGD(0.1, momentum=0.9), verbose=0)
    model.gradients(X0[:3], y0[:3])  # something in the cached passes
    return model


@pytest.mark.parametrize("name", list(CALL_ERRORS) + list(BUILT_ONLY_ERRORS))
def test_rejected_calls_leave_a_trained_model_unchanged(trained, name):
    call, exc, match = {**CALL_ERRORS, **BUILT_ONLY_ERRORS}[name]
    before = _state(trained)
    with pytest.raises(exc, match=match):
        call(trained)
    _assert_same_state(before, _state(trained))


# (a lazy model learns its width from the first X, so "predict width" is no error there)
@pytest.mark.parametrize("name", [k for k in CALL_ERRORS if k != "predict width"] + list(UNBUILT_ONLY_ERRORS))
def test_rejected_calls_leave_a_fresh_model_unbuilt(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    call, exc, match = {**CALL_ERRORS, **UNBUILT_ONLY_ERRORS}[name]
    model = classifier(seed=0)
    if name == "validation_data X width":
        # the model is lazy, so X gives the width and X_val must match it
        match = r"X_val must have 4 features, as X has\. Received: X_val with shape \(20, 3\)"
    before = _state(model)
    with pytest.raises(exc, match=match):
        call(model)
    _assert_same_state(before, _state(model))
    assert not model.built
    assert list(tmp_path.iterdir()) == []
    # nothing consumed the seeded generator: training now is training a fresh model
    model.fit(X0, y0, epochs=1, batch_size=8, verbose=0)
    fresh = classifier(seed=0)
    fresh.fit(X0, y0, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.get_flat_params(), fresh.get_flat_params())


def test_bias_free_layer_rejects_b():
    model = bp.Sequential([bp.Dense(3, use_bias=False)], input_dim=2).build()
    assert model[0].b is None
    params = model.get_flat_params()
    with pytest.raises(ValueError, match=r"this layer has no bias \(use_bias=False\)"):
        model[0].b = np.zeros(3)
    np.testing.assert_array_equal(model.get_flat_params(), params)
    assert model.n_params == 6


def test_binary_cross_entropy_targets_are_checked():
    model = bp.Sequential([bp.Dense(2, activation="sigmoid")], seed=0, input_dim=3).build()
    params = model.get_flat_params()
    y = np.zeros((4, 2))
    y[2, 1] = 1.5
    with pytest.raises(ValueError, match=r"binary_cross_entropy targets must lie in \[0, 1\]\. "
                                         r"Received: 1\.5 at row 2, column 1"):
        model.fit(np.zeros((4, 3)), y, verbose=0)
    with pytest.raises(ValueError, match=r"loss 'cross_entropy' needs an output activation in "
                                         r"\('softmax'\)\. Received: output activation 'sigmoid'"):
        model.evaluate(np.zeros((4, 3)), np.zeros(4, int), loss="cross_entropy")
    np.testing.assert_array_equal(model.get_flat_params(), params)
    assert model.loss is None and model.optimizer is None


def test_zero_grad_on_an_unbuilt_model_does_nothing():
    # the README's explicit loop starts with zero_grad() on a model that backward builds later
    model = classifier()
    model.zero_grad()
    assert not model.built
    model.backward(X0, y0)
    once = model.get_flat_grads().copy()
    model.zero_grad()
    np.testing.assert_array_equal(model.get_flat_grads(), 0)
    model.backward(X0, y0)
    np.testing.assert_array_equal(model.get_flat_grads(), once)


def test_an_empty_model_says_so():
    model = bp.Sequential()
    for call in (lambda: model.predict(X0), lambda: model.fit(X0, y0, verbose=0),
                 lambda: model.evaluate(X0, y0), lambda: model.build(4)):
        with pytest.raises(ValueError, match=r"a Sequential needs at least one layer\. Received: no layers"):
            call()
    assert not model.built
