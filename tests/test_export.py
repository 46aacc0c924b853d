"""Serving and interchange: bp.to_onnx (run by ONNX Runtime), the PyTorch hand-over both ways.

Each exported graph must compute what ``model.predict`` computes, within the dtype's rounding
(conftest's tolerance table: ONNX Runtime's and OpenBLAS's products sum in different orders).
"""

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import bp
from bp import _reference
from tests.conftest import assert_close, tol

ACTIVATIONS = list(bp.layers.ACTIVATIONS)
# exponential in both hidden layers overflows to inf on these weights (and then inf * 0 = NaN
# where the two sides need not agree): it is tested as the output tau
HIDDEN_ACTIVATIONS = [a for a in ACTIVATIONS if a != "exponential"]
N_IN, HIDDEN = 5, (8, 6)


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason='the PyTorch hand-over needs torch: '
                                               'pip install "bp[torch]"')


def make_model(activation, tau, dtype, seed=3):
    """5 -> 8 (sigma) -> 6 (sigma, no bias) -> 3 (tau), biases non-zero, leaky_relu's alpha 0.2."""
    model = bp.Sequential([bp.Dense(HIDDEN[0], activation, alpha=0.2),
                           bp.Dense(HIDDEN[1], activation, alpha=0.2, use_bias=False),
                           bp.Dense(3, tau, alpha=0.2)], dtype=dtype, seed=seed)
    model.build(N_IN)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.use_bias:
            layer.b = rng.normal(0, 0.5, layer.units)
    return model


def architecture(model):
    """What a torch module can carry of each layer (alpha only where it means something)."""
    return [(d.units, d.activation, d.use_bias, d.input_dim,
             d.alpha if d.activation == "leaky_relu" else None) for d in model.layers]


def run_onnx(proto, X, output=0):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": X})[output]


# ---- bp.Sequential -> ONNX --------------------------------------------------------------------


def make_layered_model(dtype, seed=0):
    """Every layer beyond Dense, trained a few epochs so the running statistics and gamma/beta
    are not their initial values: input dropout, BatchNorm both ways, a Residual block with a
    LayerNorm, norms without gamma or beta."""
    model = bp.Sequential([bp.Dropout(0.1), bp.Dense(16), bp.BatchNormalization(momentum=0.5),
                           bp.Activation("relu"),
                           bp.Residual([bp.LayerNormalization(), bp.Dense(32, "gelu"),
                                        bp.Dropout(0.2), bp.Dense(16)]),
                           bp.LayerNormalization(center=False),
                           bp.BatchNormalization(scale=False, momentum=0.5),
                           bp.Dense(3, "softmax")], dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 2, (64, N_IN)).astype(dtype)
    model.fit(X, np.eye(3)[rng.integers(0, 3, 64)], epochs=3, batch_size=16, verbose=0)
    return model


def test_onnx_of_every_layer_matches_predict(dtype, rng):
    model = make_layered_model(dtype)
    before = model.get_flat_params().copy()
    proto = bp.to_onnx(model)
    np.testing.assert_array_equal(model.get_flat_params(), before)  # folding changed nothing
    for rows in (1, 257):
        X = rng.normal(0, 2, (rows, N_IN)).astype(dtype)
        assert_close(run_onnx(proto, X), model.predict(X), dtype, k=32, err_msg=f"{rows} rows")


@pytest.mark.parametrize("tau", ACTIVATIONS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_onnx_matches_predict(activation, tau, dtype, rng):
    model = make_model(activation, tau, dtype)
    proto = bp.to_onnx(model)
    for rows in (1, 257):
        X = (rng.normal(0, 2, (rows, N_IN))).astype(dtype)
        got = run_onnx(proto, X)
        assert got.shape == (rows, 3)
        assert_close(got, model.predict(X), dtype, k=max(HIDDEN),
                     err_msg=f"{activation}/{tau} on {rows} rows")


def test_onnx_float64_gelu_is_exact_to_float64_rounding():
    """The float64 graph computes Phi from erfc's Chebyshev series (ONNX Runtime has no float64
    Erf): gelu(z) on z in [-40, 40] against the erf formula, relative where it does not cancel."""
    model = bp.Sequential([bp.Dense(1, "gelu")], dtype="float64")
    model.build(1)
    model.layers[0].W = [[1.0]]
    z = np.concatenate([np.linspace(-40, 40, 20001), [-1e-300, 0.0, 1e-300, 3e-8, -7.5]])[:, None]
    got = run_onnx(bp.to_onnx(model), z)[:, 0]
    from scipy.special import ndtr  # Phi without the cancellation of 1 + erf(z / sqrt 2)
    want = z[:, 0] * ndtr(z[:, 0])
    # exp(-a^2), a = |z| / sqrt 2, carries the rounding of a^2 (~2 a^2 eps = z^2 eps, relative):
    # exact for |z| up to a few, ~1e-13 at z = -40 where gelu is ~1e-350 (subnormal, then 0)
    nonzero = want != 0
    relative = np.abs(got - want)[nonzero] / np.abs(want[nonzero])
    allowed = 1e-13 + 2 * z[nonzero, 0] ** 2 * np.finfo(np.float64).eps
    assert (relative <= allowed).all(), relative.max()
    assert (np.abs(got[~nonzero]) < 1e-300).all()  # the reference underflows to 0 first
    assert_close(got, _reference.sigma("gelu", z)[:, 0], np.float64)


def test_onnx_graph_names_shapes_and_file(tmp_path, dtype):
    model = bp.Sequential([bp.Dense(4, "relu", name="hidden"), bp.Dense(2, "sigmoid")],
                          dtype=dtype, seed=0)
    model.build(7)
    path = tmp_path / "model.onnx"
    proto = bp.to_onnx(model, path)
    onnx.checker.check_model(str(path))
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString() == proto.SerializeToString()
    (x,), (y,) = loaded.graph.input, loaded.graph.output
    elem = onnx.TensorProto.FLOAT if dtype == np.float32 else onnx.TensorProto.DOUBLE
    assert (x.name, x.type.tensor_type.elem_type) == ("X", elem)
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["batch", 7]
    assert (y.name, [d.dim_param or d.dim_value for d in y.type.tensor_type.shape.dim]) == (
        "f_out", ["batch", 2])
    names = {t.name for t in loaded.graph.initializer}
    assert {"hidden.W", "hidden.b", "dense_1.W", "dense_1.b"} <= names
    assert loaded.opset_import[0].version == 17
    X = np.arange(21, dtype=dtype).reshape(3, 7) / 10
    assert_close(run_onnx(loaded, X), model.predict(X), dtype, k=7)


@pytest.mark.parametrize("opset", [14, 21])
def test_onnx_opsets_run(opset, rng):
    model = make_model("gelu", "softmax", np.float32)
    X = rng.normal(size=(9, N_IN)).astype(np.float32)
    proto = bp.to_onnx(model, opset=opset)
    assert proto.opset_import[0].version == opset
    assert_close(run_onnx(proto, X), model.predict(X), np.float32, k=8)


def test_onnx_bad_input(tmp_path):
    unbuilt = bp.Sequential([bp.Dense(2)])
    with pytest.raises(ValueError, match="not built yet"):
        bp.to_onnx(unbuilt)
    model = make_model("relu", "identity", np.float32)
    missing = tmp_path / "no" / "such" / "model.onnx"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bp.to_onnx(model, missing)
    assert not missing.parent.exists()
    for bad in ("model.onnx", np.zeros(3), None):
        with pytest.raises(TypeError, match="to_onnx exports a bp.Sequential.*Received"):
            bp.to_onnx(bad)
    with pytest.raises(TypeError, match="path must be a str"):
        bp.to_onnx(model, 3)
    for opset in (13, 10_000, 17.0, True):
        with pytest.raises(ValueError, match=r"opset must be an int from 14 .*Received"):
            bp.to_onnx(model, opset=opset)


@pytest.mark.slow
def test_optional_packages_are_not_imported_by_bp():
    code = "import sys, bp; print(sorted({'onnx', 'torch', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


def test_missing_extras_are_named(monkeypatch):
    model = make_model("relu", "identity", np.float32)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r'pip install "bp\[onnx\]"'):
        bp.to_onnx(model)
    with pytest.raises(ImportError, match=r'pip install "bp\[torch\]"'):
        bp.to_torch(model)
    with pytest.raises(ImportError, match=r'pip install "bp\[torch\]"'):
        bp.from_torch(object())


# ---- scikit-learn MLPs -> ONNX ---------------------------------------------------------------


def _fit(estimator, X, y):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


@pytest.mark.parametrize("target", ["multiclass", "strings", "binary", "multilabel"])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_onnx_sklearn_classifier(target, activation, dtype, rng):
    from sklearn.neural_network import MLPClassifier
    X = rng.normal(size=(120, 6)).astype(dtype)
    k = np.arange(120) % 3
    y = {"multiclass": k * 10 - 7, "strings": np.array(["ant", "bee", "cat"])[k],
         "binary": k % 2, "multilabel": np.stack([k % 2, (k // 2) % 2, k == 0], 1).astype(int)}[target]
    clf = _fit(MLPClassifier((7, 5), activation=activation, max_iter=30, random_state=0), X, y)
    assert clf.coefs_[0].dtype == dtype
    proto = bp.to_onnx(clf)
    label = run_onnx(proto, X, 0)
    proba = run_onnx(proto, X, 1)
    np.testing.assert_array_equal(label, clf.predict(X))
    assert_close(proba, clf.predict_proba(X), dtype, k=7)


def test_onnx_sklearn_outputs_as_skl2onnx_names_them(rng):
    import skl2onnx
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = np.arange(60) % 3
    for est in (_fit(MLPClassifier((5,), max_iter=20, random_state=0), X, y),
                _fit(MLPRegressor(hidden_layer_sizes=(5,), max_iter=20, random_state=0), X, y * 1.5)):
        ours = bp.to_onnx(est).graph
        options = {"zipmap": False} if hasattr(est, "classes_") else None
        theirs = skl2onnx.to_onnx(est, X[:1], options=options).graph
        assert [(o.name, o.type.tensor_type.elem_type) for o in ours.output] == [
            (o.name, o.type.tensor_type.elem_type) for o in theirs.output]
        assert [i.name for i in ours.input] == [i.name for i in theirs.input]


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_onnx_sklearn_regressor(n_outputs, dtype, rng):
    from sklearn.neural_network import MLPRegressor
    X = rng.normal(size=(80, 3)).astype(dtype)
    y = X @ rng.normal(size=(3, n_outputs))
    reg = _fit(MLPRegressor(hidden_layer_sizes=(6,), activation="tanh", max_iter=40, random_state=0), X,
               y[:, 0] if n_outputs == 1 else y)
    got = run_onnx(bp.to_onnx(reg), X)
    assert got.shape == (80, n_outputs)
    assert_close(got, reg.predict(X).reshape(80, n_outputs), dtype, k=6)


def test_onnx_sklearn_unfitted():
    from sklearn.neural_network import MLPClassifier
    with pytest.raises(ValueError, match="MLPClassifier is not fitted yet"):
        bp.to_onnx(MLPClassifier())


# ---- PyTorch: bp -> torch -> bp ----------------------------------------------------------------


def test_to_torch_exponential(torch, dtype, rng):
    # torch has no exponential module: to_torch writes a small one, from_torch does not read it
    model = make_model("tanh", "exponential", dtype)
    X = rng.normal(0, 2, (33, N_IN)).astype(dtype)
    with torch.inference_mode():
        got = model.to_torch()(torch.from_numpy(X)).numpy()
    assert_close(got, model.predict(X), dtype, k=max(HIDDEN))
    with pytest.raises(ValueError, match="has no bp equivalent"):
        bp.Sequential.from_torch(model.to_torch())


@pytest.mark.parametrize("tau", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_torch_round_trip_is_exact(torch, activation, tau, dtype, rng):
    model = make_model(activation, tau, dtype)
    module = model.to_torch()
    X = rng.normal(0, 2, (33, N_IN)).astype(dtype)
    with torch.inference_mode():
        got = module(torch.from_numpy(X)).numpy()
    assert_close(got, model.predict(X), dtype, k=max(HIDDEN))
    back = bp.Sequential.from_torch(module)
    assert back.dtype == dtype
    assert architecture(back) == architecture(model)
    np.testing.assert_array_equal(back.get_flat_params(), model.get_flat_params())
    np.testing.assert_array_equal(back.predict(X), model.predict(X))


def test_torch_weights_are_copies_and_transposed(torch):
    model = make_model("relu", "identity", np.float64)
    module = bp.to_torch(model)
    first = module[0]
    np.testing.assert_array_equal(first.weight.detach().numpy(), model.layers[0].W.T)
    with torch.no_grad():
        first.weight.add_(1.0)
    assert not np.array_equal(first.weight.detach().numpy(), model.layers[0].W.T)
    assert not module.training
    assert [type(m).__name__ for m in module] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert module[2].bias is None


def test_from_torch_reads_a_torch_built_module(torch, rng):
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Sequential(nn.Linear(4, 9), nn.LeakyReLU(0.3)), nn.Identity(),
                           nn.Linear(9, 5, bias=False), nn.GELU(), nn.Linear(5, 3), nn.Softmax(dim=1))
    model = bp.from_torch(module)
    assert [(d.units, d.activation, d.use_bias) for d in model.layers] == [
        (9, "leaky_relu", True), (5, "gelu", False), (3, "softmax", True)]
    assert model.layers[0].alpha == pytest.approx(0.3)
    X = rng.normal(size=(10, 4)).astype(np.float32)
    with torch.inference_mode():
        want = module(torch.from_numpy(X)).numpy()
    assert_close(model.predict(X), want, np.float32, k=9)
    as64 = bp.from_torch(module, dtype="float64")
    assert as64.dtype == np.float64
    np.testing.assert_array_equal(as64.layers[0].W, module[0][0].weight.detach().double().numpy().T)
    single = bp.from_torch(nn.Linear(3, 2).double())
    assert (single.dtype, len(single), single.layers[0].activation) == (np.float64, 1, "identity")


def test_torch_round_trip_of_every_layer(torch, dtype, rng):
    # norms with their default center/scale: bp -> torch -> bp gives the same bits, running
    # statistics included; torch's module (eval mode) computes predict's f_out
    model = make_layered_model(dtype)
    module = bp.to_torch(model)
    assert not module.training and module[2].momentum == 1 - model[2].momentum
    X = rng.normal(0, 2, (33, N_IN)).astype(dtype)
    with torch.no_grad():
        assert_close(module(torch.from_numpy(X)).numpy(), model.predict(X), dtype, k=32)
    back = bp.from_torch(module)
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    plain = bp.Sequential([bp.Dense(8), bp.BatchNormalization(momentum=0.9), bp.Activation("tanh"),
                           bp.Residual([bp.LayerNormalization(), bp.Dense(8, "relu"),
                                        bp.Dropout(0.3)]),
                           bp.Dense(3)], dtype=dtype, seed=1)
    plain.fit(X, rng.normal(size=(33, 3)), epochs=2, batch_size=11, verbose=0)
    again = bp.from_torch(bp.to_torch(plain))
    assert repr(again) == repr(plain)
    np.testing.assert_array_equal(again.get_flat_params(), plain.get_flat_params())
    np.testing.assert_array_equal(again[1].running, plain[1].running)
    assert again[1].momentum == plain[1].momentum  # 1 - (1 - m) is exact for m >= 0.5


def test_from_torch_reads_activations_dropout_and_norms_as_layers(torch):
    nn = torch.nn
    from bp._torch import Residual
    module = nn.Sequential(nn.ReLU(), nn.Linear(3, 4), nn.ReLU(), nn.Tanh(), nn.Dropout(0.25),
                           nn.BatchNorm1d(4, eps=1e-5, momentum=0.1), nn.LayerNorm(4, bias=False),
                           Residual(nn.Sequential(nn.Linear(4, 4), nn.GELU())), nn.Linear(4, 2))
    model = bp.from_torch(module)
    assert [type(layer).__name__ for layer in model] == [
        "Activation", "Dense", "Activation", "Dropout", "BatchNormalization",
        "LayerNormalization", "Residual", "Dense"]
    assert model[1].activation == "relu" and model[1].dropout is None  # the Dropout follows tanh
    assert (model[4].momentum, model[4].epsilon) == (0.9, 1e-5)
    assert (model[5].scale, model[5].center) == (True, False)
    X = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    with torch.no_grad():
        assert_close(model.predict(X), module.eval()(torch.from_numpy(X)).numpy(), np.float32, k=4)


def test_from_torch_refusals(torch):
    nn = torch.nn
    from bp._torch import Residual
    cases = [
        (nn.Sequential(nn.Linear(3, 2), nn.Flatten()), ValueError, r"Flatten.*has no bp equivalent"),
        (nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2, momentum=None)), ValueError,
         "keeps running statistics with a momentum. Received: track_running_stats=True, momentum=None"),
        (nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2, track_running_stats=False)), ValueError,
         "Received: track_running_stats=False"),
        (nn.Sequential(nn.Linear(3, 2), nn.LayerNorm((1, 2))), ValueError, r"normalized_shape=\(1, 2\)"),
        (nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(3)), ValueError, "takes 3 features but the layer before gives 2"),
        (nn.Sequential(nn.Linear(3, 2), Residual(nn.Sequential(nn.Linear(2, 4)))), ValueError,
         r"(?s)module \[1\].*must keep its width. Received: 2 in, 4 out"),
        (nn.Sequential(nn.Linear(3, 2), nn.GELU("tanh")), ValueError, "exact erf form.*approximate='tanh'"),
        (nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=0)), ValueError, "over each row.*dim=0"),
        (nn.Sequential(nn.Linear(3, 2), nn.LeakyReLU(-0.1)), ValueError, "slope >= 0"),
        (nn.Sequential(nn.Linear(3, 2), nn.Linear(4, 2)), ValueError, "takes 4 features but the layer before gives 2"),
        (nn.Sequential(), ValueError, "no Linear layer"),
        (nn.Sequential(nn.Linear(3, 2).half()), TypeError, "float16: pass dtype="),
        (nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2).double()), TypeError, "mix dtypes"),
        (nn.ReLU(), TypeError, "Received: ReLU"),
        (nn.ModuleList([nn.Linear(3, 2)]), TypeError, "custom forward cannot be read"),
        ("not a module", TypeError, "Received: str"),
    ]
    for module, error, message in cases:
        with pytest.raises(error, match=message):
            bp.from_torch(module)


def test_to_torch_bad_input(torch):
    with pytest.raises(ValueError, match="not built yet"):
        bp.to_torch(bp.Sequential([bp.Dense(2)]))
    with pytest.raises(TypeError, match="to_torch takes a bp.Sequential. Received: dict"):
        bp.to_torch({})


def test_onnx_and_torch_agree(torch, rng):
    """The two doors out compute the same function (each equal to predict within rounding)."""
    model = make_model("tanh", "sigmoid", np.float64)
    X = rng.normal(size=(50, N_IN))
    with torch.inference_mode():
        via_torch = model.to_torch()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(run_onnx(bp.to_onnx(model), X), via_torch, **tol(np.float64, 8))
