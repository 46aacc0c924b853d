"""dtype="mixed_bfloat16": the engine's whole steps against the Python twin with bf16 rounding
(bp/_ops.py, bp._reference.round_bf16) on both bf16 paths, predict and evaluate, save/load,
export, training accuracy against float32, and bad input."""

import numpy as np
import pytest

import bp
from bp import _reference as R
from bpcore import _bf16

HAS_AVX512_BF16 = "avx512_bf16" in _bf16.kernel_path()
PATHS = [pytest.param("avx512_bf16", marks=pytest.mark.skipif(
    not HAS_AVX512_BF16, reason="this CPU has no AVX512-BF16")), "fallback"]

# The engine and the twin compute the same bf16 products with float32 sums in another order
# (bp's kernel or sgemm against the twin's sgemm): a few float32 eps relative to the largest
# entry, plus the rare operand whose float32 difference moves its bf16 rounding (2^-8 of one of
# k terms). Without the rounding (float32 products) the gradients differ by ~1e-2 of the largest
# entry (test_float32_products_fail_the_tolerance), so this bound can fail.
STEP_RTOL = 1e-4


def _close(actual, desired, rtol=STEP_RTOL, what=""):
    scale = np.abs(desired).max()
    err = np.abs(np.asarray(actual, np.float64) - desired).max()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol} x {scale:.3g}"


@pytest.fixture(params=PATHS)
def path(request):
    """Engines built inside the test run on this bf16 path."""
    _bf16.set_path(request.param)
    yield request.param
    _bf16.set_path("auto")


def _model(dtype="mixed_bfloat16", seed=0, norm=False):
    layers = [bp.Dense(40, activation="relu"), bp.Dense(33, activation="tanh")]
    if norm:
        layers = [bp.Dense(40, activation="relu"), bp.LayerNormalization(), bp.Dropout(0.2),
                  bp.Dense(33, activation="gelu")]
    return bp.Sequential(layers + [bp.Dense(3, activation="softmax")], dtype=dtype, seed=seed)


def _data(n=37, d=19, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 3, n)
    return X, y, np.eye(3, dtype=np.float32)[y]


def _gradients(model, X, Y, compiled, beta=0.0, draw=None):
    passes = model._passes
    passes.compiled = compiled
    grads = np.full_like(passes.params, 0.5)
    ws = passes.new_workspace(X.shape[0])
    value = passes.backward(X, Y, None, ws, "cross_entropy", 1 / X.shape[0], beta, grads, 1,
                            draw)
    return value, grads, ws


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_backward_engine_equals_bf16_twin(path, norm, beta):
    X, _, Y = _data()
    model = _model(norm=norm)
    model.build(X.shape[1])
    draw = 3 if norm else None   # with a Dropout: a training batch's masks
    v_e, g_e, ws_e = _gradients(model, X, Y, True, beta, draw)
    v_t, g_t, ws_t = _gradients(model, X, Y, False, beta, draw)
    assert v_e == pytest.approx(v_t, rel=1e-5)
    for (gW_e, gb_e), (gW_t, gb_t) in zip(model._passes.views(g_e), model._passes.views(g_t)):
        _close(gW_e, gW_t, what="grad_W")
        _close(gb_e, gb_t, what="grad_b")
    for z_e, z_t in zip(ws_e.z_out, ws_t.z_out):
        if z_e is not None:
            _close(z_e, z_t, what="z_out")


def test_float32_products_fail_the_tolerance():
    """The negative control: a float32 model's gradients are not within STEP_RTOL of the bf16
    twin's (so the comparison above sees whether the products are rounded)."""
    X, _, Y = _data()
    mixed, plain = _model(), _model("float32")
    mixed.build(X.shape[1])
    plain.build(X.shape[1])
    _, g_t, _ = _gradients(mixed, X, Y, False)
    _, g_f, _ = _gradients(plain, X, Y, True)
    with pytest.raises(AssertionError):
        _close(g_f, g_t)


def test_twin_dense_step_is_numpy_with_bf16_rounding():
    """One dense layer's step written out in NumPy: the products of bf16-rounded operands."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((9, 6)).astype(np.float32)
    y = rng.standard_normal((9, 2)).astype(np.float32)
    model = bp.Sequential([bp.Dense(2)], dtype="mixed_bfloat16", seed=2)
    model.build(6)
    W, b = model.layers[0].W.astype(np.float64), model.layers[0].b.astype(np.float64)
    for compiled in (True, False):
        value, grads, _ = _gradients_mse(model, X, y, compiled)
        f = R.round_bf16(X).astype(np.float64) @ R.round_bf16(W.astype(np.float32)) + b
        delta = (f - y) / y.size      # d/df of mean((f - y)^2) / 2 ... bp's mse: see below
        delta *= 2                    # bp.losses' mse is mean((f - y)^2): its derivative 2(f - y)/N
        grad_W = R.round_bf16(X).astype(np.float64).T @ R.round_bf16(delta.astype(np.float32))
        gW, gb = model._passes.views(grads)[0]
        _close(gW, grad_W, rtol=1e-5, what=f"grad_W compiled={compiled}")
        _close(gb, delta.sum(0), rtol=1e-5, what=f"grad_b compiled={compiled}")
        assert value == pytest.approx(np.mean((f - y) ** 2), rel=1e-5)


def _gradients_mse(model, X, Y, compiled):
    passes = model._passes
    passes.compiled = compiled
    grads = np.zeros_like(passes.params)
    ws = passes.new_workspace(X.shape[0])
    value = passes.backward(X, Y, None, ws, "mse", 1 / Y.size, 0.0, grads, 1)
    return value, grads, ws


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fit_engine_equals_bf16_twin(path, accumulate):
    X, y, _ = _data(n=90)
    params = []
    for compiled in (True, False):
        model = _model()
        model.build(X.shape[1])
        model._passes.compiled = compiled
        model.fit(X, y, loss="cross_entropy", optimizer=bp.Adam(1e-2), epochs=2, batch_size=16,
                  accumulate=accumulate, verbose=0)
        params.append(model.get_flat_params())
    _close(params[0], params[1], rtol=1e-3, what="parameters after 2 epochs")


def test_threads_give_the_same_bits(path):
    X, y, _ = _data(n=300, d=64)
    params = []
    for n_threads in (1, 2):
        model = bp.Sequential([bp.Dense(256, activation="relu"), bp.Dense(3, activation="softmax")],
                              dtype="mixed_bfloat16", seed=0)
        with bp.num_threads(n_threads):
            model.fit(X, y, loss="cross_entropy", optimizer=bp.SGD(0.1), epochs=2,
                      batch_size=128, verbose=0)
        params.append(model.get_flat_params())
    np.testing.assert_array_equal(params[0], params[1])


@pytest.mark.parametrize("norm", [False, True])
def test_predict_and_evaluate_equal_the_twin_forward(path, norm):
    X, y, Y = _data(n=1500)   # more rows than one of predict's blocks
    model = _model(norm=norm)
    model.build(X.shape[1])
    f_out = model.predict(X)
    ws = model._passes.new_workspace(X.shape[0])
    _close(f_out, model._passes.forward(X, ws, 1), what="predict")
    one = model.predict(X[:1])
    if path == "avx512_bf16":   # bp's kernel sums each entry alike whatever the rows around it
        np.testing.assert_array_equal(one, f_out[:1])
    else:                       # sgemm's rounding may depend on the number of rows
        _close(one, f_out[:1], rtol=1e-5, what="one row")
    out = np.empty_like(f_out)
    assert model.predict(X, out=out) is out
    np.testing.assert_array_equal(out, f_out)
    result = model.evaluate(X, y, loss="cross_entropy")
    expected = -np.mean(np.log(f_out[np.arange(len(y)), y]))
    assert result["loss"] == pytest.approx(expected, rel=1e-4)


def test_predict_sees_weights_set_from_python(path):
    X, _, _ = _data()
    model = _model()
    before = model.predict(X)
    params = model.get_flat_params()
    model.set_flat_params(params * 0.5)
    assert not np.array_equal(model.predict(X), before)
    model.set_flat_params(params)
    np.testing.assert_array_equal(model.predict(X), before)


def test_save_load_keep_the_policy(tmp_path):
    X, y, _ = _data(n=64)
    model = _model()
    model.fit(X, y, loss="cross_entropy", epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.bp")
    loaded = bp.load(tmp_path / "m.bp")
    assert loaded.dtype_policy == "mixed_bfloat16" and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert "mixed_bfloat16" in repr(loaded)
    assert model[:2].dtype_policy == "mixed_bfloat16"


def test_export_torch_has_float32_weights():
    torch = pytest.importorskip("torch")
    X, _, _ = _data()
    model = _model()
    model.build(X.shape[1])
    module = model.to_torch()
    assert all(p.dtype == torch.float32 for p in module.parameters())
    with torch.no_grad():
        f = module(torch.from_numpy(X)).numpy()
    # float32 products against bf16's: close, not equal
    np.testing.assert_allclose(f, model.predict(X), atol=2e-2)


def test_insight_runs_on_a_mixed_model():
    X, y, _ = _data(n=64)
    model = _model()
    model.fit(X, y, loss="cross_entropy", epochs=1, batch_size=16, verbose=0)
    report = model.diagnose(X, y, loss="cross_entropy")
    assert len(report) == len(model.layers)


# ---- accuracy against float32 -------------------------------------------------------------------

def _accuracy_pair(X, y, X_test, y_test, layers, epochs, batch_size, lr):
    accuracy = {}
    for dtype in ("float32", "mixed_bfloat16"):
        model = bp.Sequential([bp.Dense(u, activation=a) for u, a in layers], dtype=dtype,
                              seed=0)
        model.fit(X, y, loss="cross_entropy", optimizer=bp.Adam(lr), epochs=epochs,
                  batch_size=batch_size, verbose=0)
        accuracy[dtype] = np.mean(model.predict(X_test).argmax(1) == y_test) * 100
    return accuracy


def test_digits_accuracy_within_half_a_point_of_float32():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    acc = _accuracy_pair(X[:1437], y[:1437], X[1437:], y[1437:],
                         [(64, "relu"), (10, "softmax")], epochs=30, batch_size=32, lr=3e-3)
    assert acc["float32"] > 85   # learned (chance: 10%)
    assert abs(acc["mixed_bfloat16"] - acc["float32"]) <= 0.5, acc


def test_60000_by_784_accuracy_within_half_a_point_of_float32():
    """A synthetic mnist-sized task: 60000 training and 10000 test rows of 784 features, labels
    from a random linear teacher, one epoch of a 784-64-10 network (kept small for the suite's
    time; the products are the mnist network's first layer's)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((70000, 784), dtype=np.float32)
    y = (X @ rng.standard_normal((784, 10), dtype=np.float32)).argmax(1)
    acc = _accuracy_pair(X[:60000], y[:60000], X[60000:], y[60000:],
                         [(64, "relu"), (10, "softmax")], epochs=1, batch_size=256, lr=3e-3)
    assert acc["float32"] > 70   # learned (chance: 10%)
    assert abs(acc["mixed_bfloat16"] - acc["float32"]) <= 0.5, acc


# ---- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bfloat16", "mixed_float16", "float16", "Mixed_BFloat16"])
def test_unknown_policy_lists_the_valid_names(name):
    with pytest.raises(TypeError, match=r"dtype must be one of float32, float64, mixed_bfloat16\. "
                                        rf"Received: dtype='{name}'"):
        bp.Sequential([bp.Dense(1)], dtype=name)


def test_float64_out_refused_nothing_changed():
    X, _, _ = _data()
    model = _model()
    model.build(X.shape[1])
    params = model.get_flat_params().copy()
    out = np.zeros((X.shape[0], 3))
    with pytest.raises(TypeError, match=r"out must have the model's dtype float32\. "
                                        r"Received: out with dtype float64"):
        model.predict(X, out=out)
    assert not out.any()
    np.testing.assert_array_equal(model.get_flat_params(), params)


def test_engine_refuses_float64_parameters():
    from bp import _passes
    model = bp.Sequential([bp.Dense(2)], dtype="float64", seed=0)
    model.build(3)
    with pytest.raises(TypeError, match=r"mixed_bfloat16 keeps float32 parameters\. "
                                        r"Received: params with dtype float64"):
        _passes.Passes(model.layers, model.get_flat_params(), mixed=True)


def test_float64_data_is_cast_to_float32():
    """float64 X is cast to the parameters' float32 (as for a float32 model): the same result."""
    X, y, _ = _data()
    model = _model()
    model.build(X.shape[1])
    np.testing.assert_array_equal(model.predict(X.astype(np.float64)), model.predict(X))


def test_show_config_says_the_path(capsys):
    bp.show_config()
    assert _bf16.kernel_path() in capsys.readouterr().out


def test_sklearn_refuses_the_policy_by_name_before_fitting():
    pytest.importorskip("sklearn")
    from bp.sklearn import MLPClassifier
    X, y, _ = _data(n=40)
    clf = MLPClassifier(hidden_layer_sizes=(8,), dtype="mixed_bfloat16", max_iter=3)
    with pytest.raises(ValueError, match=r"dtype='mixed_bfloat16' is not available in bp\.sklearn "
                                         r"yet.*Received: dtype='mixed_bfloat16'"):
        clf.fit(X, y)
    assert not hasattr(clf, "coefs_")


def test_data_parallel_fit_sums_float32_gradients(tmp_path):
    from tests.test_distributed import HERE, _have_mpi, run_ranks
    if not _have_mpi():
        pytest.skip("mpi4py and mpiexec are not installed")
    assert "ok p=2" in run_ranks(2, HERE / "mpi" / "mixed_bfloat16.py", tmp_path)
