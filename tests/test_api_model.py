"""The model API without training loops: construction, list behaviour, lazy build, repr and
summary, parameter assignment, dtypes, predict/evaluate, the cached passes (error_signals, z_in,
z_out) against the NumPy reference, and every error, each matched by regex with the model left
exactly as it was."""

import re

import numpy as np
import pytest
from scipy import stats

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
        _ = layer.W
    with pytest.raises(ValueError, match=r"not built yet"):
        _ = layer.b


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
    # the shape of the distribution, not only its spread: a Kolmogorov-Smirnov test against the
    # named law passes and against the other law of the same std fails (60000 draws from a fixed
    # seed: deterministic; the wrong law is rejected at p ~ 1e-100)
    a = std * np.sqrt(3)
    laws = {"normal": stats.norm(0, std).cdf, "uniform": stats.uniform(-a, 2 * a).cdf}
    named = "uniform" if initializer.endswith("uniform") else "normal"
    other = "normal" if named == "uniform" else "uniform"
    assert stats.kstest(W.ravel(), laws[named]).pvalue > 1e-3
    assert stats.kstest(W.ravel(), laws[other]).pvalue < 1e-10
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
    # printed, None returned (Keras: a notebook shows the table once); the text on request
    assert model.summary() is None
    text = model.summary(to_string=True)
    assert capsys.readouterr().out == text + "\n"
    rows, total, dtype = _summary_rows(text)
    assert rows == {"dense_0": (128, "relu", "8,320"), "dense_1": (64, "relu", "8,256"),
                    "out": (10, "softmax", "640")}
    assert (total, dtype) == ("17,216", "float32")
    model.build()
    assert model.n_params == 17216 == sum(L.n_params for L in model)
    assert _summary_rows(model.summary(to_string=True))[0] == rows


def test_summary_of_a_model_without_input_width(capsys):
    model = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(3, activation="softmax")],
                          dtype="float64")
    rows, total, dtype = _summary_rows(model.summary(to_string=True))
    assert rows == {"dense_0": (4, "relu", "?"), "dense_1": (3, "softmax", "15")}
    assert (total, dtype) == ("? (not built)", "float64")


def test_summary_to_a_file(tmp_path, capsys):
    path = tmp_path / "summary.txt"
    with open(path, "w") as f:
        assert classifier(input_dim=4).summary(file=f) is None
    assert capsys.readouterr().out == ""
    assert path.read_text() == classifier(input_dim=4).summary(to_string=True) + "\n"


def test_summary_through_print_fn(capsys):
    lines = []
    assert classifier(input_dim=4).summary(print_fn=lines.append) is None
    assert capsys.readouterr().out == ""
    assert lines == [classifier(input_dim=4).summary(to_string=True)]


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


def test_error_signals_are_snapshots():
    # a later backward with the same batch size reuses the workspace: what was handed out before
    # must not change under the caller
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    model = bp.Sequential([bp.Dense(4, activation="tanh"), bp.Dense(2, activation="softmax")],
                          dtype="float64", seed=0)
    model.gradients(X, y)
    first = model.error_signals
    kept = [d.copy() for d in first]
    model.backward(X[::-1], y[::-1])
    for d, k in zip(first, kept):
        np.testing.assert_array_equal(d, k)
        assert not d.flags.writeable
    assert not np.array_equal(model.error_signals[-1], kept[-1])


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
# (the tables of bad constructor arguments, method arguments and data, run on trained and unbuilt
# models alike, are in test_bad_input_api.py)

def test_add_errors_leave_the_model_unchanged():
    model = bp.Sequential([bp.Dense(3)])
    other = bp.Sequential([bp.Dense(2)])
    alone = bp.Dense(2)
    alone(np.zeros((1, 3)))  # built on its own
    for layer, exc, match in [
        (bp.SGD(), TypeError, r"Sequential holds bp layers \(Dense, Dropout, .*\)\. Received: SGD"),
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
                                         r"\('softmax', 'identity'\)\. Received: output "
                                         r"activation 'sigmoid'"):
        model.evaluate(np.zeros((4, 3)), np.zeros(4, int), loss="cross_entropy")
    np.testing.assert_array_equal(model.get_flat_params(), params)
    assert model.loss is None and model.optimizer is None


def test_zero_grad_on_an_unbuilt_model_does_nothing():
    # the README's explicit loop starts with zero_grad() on a model that backward builds later
    X0, y0 = data(n=20, d=4)
    model = classifier()
    model.zero_grad()
    assert not model.built
    model.backward(X0, y0)
    once = model.get_flat_grads().copy()
    model.zero_grad()
    np.testing.assert_array_equal(model.get_flat_grads(), 0)
    model.backward(X0, y0)
    np.testing.assert_array_equal(model.get_flat_grads(), once)
