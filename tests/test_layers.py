"""The layers beyond Dense (Activation, Dropout anywhere, LayerNormalization, BatchNormalization,
Residual, Input): forward passes and gradients against PyTorch autograd in float64, alone and in
random stacks; the compiled engine against its Python twin (bp/_ops.py) bit for bit; running
statistics against PyTorch's; and the bad input each constructor refuses."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bp

from .conftest import python_twin

torch = pytest.importorskip("torch")

REL = 1e-10  # float64 against autograd: the same formulas, summed in another order


def _act(name):
    return {"identity": torch.nn.Identity(), "relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(),
            "sigmoid": torch.nn.Sigmoid(), "gelu": torch.nn.GELU(),
            "leaky_relu": torch.nn.LeakyReLU(0.01), "softmax": torch.nn.Softmax(dim=1)}[name]


class _Add(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x) + x


def _torch_layers(layers, params):
    """PyTorch modules computing what the built bp layers compute (no dropout), with their
    parameters as leaves in `params` (in bp's flat order) to read the gradients from."""
    mods = []
    for layer in layers:
        kind = layer._kind
        if kind == "dense":
            lin = torch.nn.Linear(layer.input_dim, layer.units, bias=layer.use_bias).double()
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.W.T.copy()))
                if layer.use_bias:
                    lin.bias.copy_(torch.from_numpy(layer.b.copy()))
            params.append(("W", lin.weight))
            if layer.use_bias:
                params.append(("b", lin.bias))
            mods += [lin, _act(layer.activation)]
        elif kind == "activation":
            mods.append(_act(layer.activation))
        elif kind in ("layer_norm", "batch_norm"):
            n = layer.input_dim
            if kind == "layer_norm":
                norm = torch.nn.LayerNorm(n, eps=layer.epsilon).double()
            else:
                norm = torch.nn.BatchNorm1d(n, eps=layer.epsilon,
                                            momentum=1 - layer.momentum).double()
                with torch.no_grad():
                    norm.running_mean.copy_(torch.from_numpy(layer.moving_mean.copy()))
                    norm.running_var.copy_(torch.from_numpy(layer.moving_variance.copy()))
            with torch.no_grad():
                norm.weight.copy_(torch.from_numpy(layer.gamma.copy()))
                norm.bias.copy_(torch.from_numpy(layer.beta.copy()))
            params += [("g", norm.weight), ("b", norm.bias)]
            mods.append(norm)
        elif kind == "residual":
            mods.append(_Add(torch.nn.Sequential(*_torch_layers(layer.layers, params))))
    return mods


def _torch_gradient(model, X, Y, training):
    """The flat gradient of bp's cross-entropy (mean over rows) through PyTorch autograd."""
    params = []
    net = torch.nn.Sequential(*_torch_layers(model.layers, params))
    net.train(training)
    out = net(torch.from_numpy(X))
    loss = -(torch.from_numpy(Y) * torch.log(out)).sum(1).mean()
    loss.backward()
    flat = []
    for kind, p in params:
        flat.append((p.grad.T if kind == "W" else p.grad).reshape(-1).numpy())
    return np.concatenate(flat), out.detach().numpy(), net


def _bp_gradient(model, X, y, training, compiled=True):
    passes = model._passes
    passes.compiled = compiled
    loss, Xc, Y, w = bp._passes.prepare(model, X, y, "cross_entropy")
    ws = passes.new_workspace(X.shape[0])
    grads = np.zeros_like(model._params)
    value = passes.backward(Xc, Y, w, ws, loss, 1.0 / X.shape[0], 0.0, grads, 1,
                            draw=0 if training else None)
    return grads, value, Y


def _close(a, b, rel=REL):
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rel * scale, (np.abs(a - b).max(), scale)


def _data(n=9, d=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * 2 + 0.5, rng.integers(0, n_out, n)


def _model(layers, d=5, seed=0):
    model = bp.Sequential(layers, dtype="float64", seed=seed)
    model.build(d)
    rng = np.random.default_rng(seed + 1)
    for layer in bp._ops.parametric(model.layers):  # non-trivial gamma, beta and biases
        if layer._kind == "dense":
            if layer.use_bias:
                layer.b = rng.normal(0, 0.3, layer.units)
        else:
            layer.gamma[...] = rng.uniform(0.5, 1.5, layer.input_dim)
            layer.beta[...] = rng.normal(0, 0.3, layer.input_dim)
    return model


SINGLE = {
    "activation": lambda: [bp.Dense(6), bp.Activation("tanh"), bp.Dense(3, "softmax")],
    "activation_out": lambda: [bp.Dense(6, "relu"), bp.Dense(3), bp.Activation("softmax")],
    "layer_norm": lambda: [bp.Dense(6), bp.LayerNormalization(), bp.Dense(3, "softmax")],
    "layer_norm_eps": lambda: [bp.Dense(6, "gelu"), bp.LayerNormalization(1e-5),
                               bp.Dense(3, "softmax")],
    "batch_norm": lambda: [bp.Dense(6), bp.BatchNormalization(), bp.Dense(3, "softmax")],
    "residual": lambda: [bp.Dense(6), bp.Residual([bp.Dense(8, "relu"), bp.Dense(6)]),
                         bp.Dense(3, "softmax")],
    "input_norm": lambda: [bp.LayerNormalization(), bp.Dense(3, "softmax")],
    "resnet_mlp": lambda: [bp.Dense(6),
                           bp.Residual([bp.BatchNormalization(), bp.Dense(8, "relu"),
                                        bp.Dense(6)]),
                           bp.Residual([bp.LayerNormalization(), bp.Dense(8, "relu"),
                                        bp.Dense(6)]),
                           bp.LayerNormalization(), bp.Activation("relu"),
                           bp.Dense(3, "softmax")],
}


@pytest.mark.parametrize("name", sorted(SINGLE))
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_gradients_match_pytorch_autograd(name, training):
    X, y = _data()
    model = _model(SINGLE[name]())
    grads, value, Y = _bp_gradient(model, X, y, training)
    want, out, _ = _torch_gradient(model, X, Y, training)
    _close(grads, want)
    twin, twin_value, _ = _bp_gradient(model, X, y, training, compiled=False)
    np.testing.assert_array_equal(grads, twin)  # the engine is its twin, bit for bit
    assert value == twin_value
    if not training:
        _close(model.predict(X), out)


@st.composite
def _stacks(draw):
    """A random stack of every kind of layer (no dropout: autograd cannot replay its masks)."""
    width = draw(st.integers(2, 6))

    def block(depth):
        layers = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["dense", "act", "ln", "bn", "res"] if depth < 2
                                        else ["dense", "act", "ln", "bn"]))
            if kind == "dense":
                layers.append(bp.Dense(width, draw(st.sampled_from(
                    ["identity", "tanh", "sigmoid", "gelu"]))))
            elif kind == "act":
                layers.append(bp.Activation(draw(st.sampled_from(["tanh", "sigmoid", "gelu"]))))
            elif kind == "ln":
                layers.append(bp.LayerNormalization())
            elif kind == "bn":
                layers.append(bp.BatchNormalization())
            else:
                layers.append(bp.Residual(block(depth + 1)))
        return layers

    return [bp.Dense(width)] + block(0) + [bp.Dense(3, "softmax")]


@settings(max_examples=25, deadline=None)
@given(layers=_stacks(), training=st.booleans(), seed=st.integers(0, 5))
def test_random_stacks_match_pytorch_autograd(layers, training, seed):
    X, y = _data(n=7, seed=seed)
    model = _model(layers, seed=seed)
    grads, _, Y = _bp_gradient(model, X, y, training)
    want, _, _ = _torch_gradient(model, X, Y, training)
    _close(grads, want, rel=1e-9)
    twin, _, _ = _bp_gradient(model, X, y, training, compiled=False)
    np.testing.assert_array_equal(grads, twin)


def test_batch_norm_running_statistics_follow_pytorch():
    X, y = _data(n=12)
    model = _model([bp.Dense(6), bp.BatchNormalization(momentum=0.9), bp.Dense(3, "softmax")])
    bn = model.layers[1]
    params = []
    net = torch.nn.Sequential(*_torch_layers(model.layers, params))
    net.train(True)
    for start in (0, 4, 8):  # three training forward passes of 4 rows
        _bp_gradient_rows = X[start:start + 4], y[start:start + 4]
        _bp_gradient(model, *_bp_gradient_rows, training=True)
        net(torch.from_numpy(X[start:start + 4]))
    _close(bn.moving_mean, net[2].running_mean.numpy())
    _close(bn.moving_variance, net[2].running_var.numpy())
    net.eval()  # inference uses them: the same predictions
    model._passes.compiled = True
    _close(model.predict(X), net(torch.from_numpy(X)).detach().numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_engine_equals_python_steps_for_every_layer(dtype):
    X, y = _data(n=40)
    results = []
    for compiled in (True, False):
        model = bp.Sequential([bp.Dropout(0.1), bp.Dense(6),
                               bp.Residual([bp.BatchNormalization(), bp.Dense(8, "relu"),
                                            bp.Dropout(0.3), bp.Dense(6)]),
                               bp.LayerNormalization(), bp.Activation("relu"), bp.Dense(3),
                               bp.Activation("softmax")], dtype=dtype, seed=3)
        with python_twin(on=not compiled):
            model.build(5)
        h = model.fit(X, y, optimizer=bp.Adam(1e-2), epochs=3, batch_size=8, accumulate=2,
                      verbose=0)
        results.append((model.get_flat_params(), model.layers[2].layers[0].running.copy(),
                        h.history["loss"]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]


def test_a_resnet_mlp_learns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8))
    y = (X[:, 0] * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    model = bp.Sequential([bp.Input(8), bp.Dense(16),
                           bp.Residual([bp.BatchNormalization(), bp.Dense(32, "relu"),
                                        bp.Dropout(0.1), bp.Dense(16)]),
                           bp.LayerNormalization(), bp.Activation("relu"),
                           bp.Dense(3, "softmax")], seed=0)
    h = model.fit(X, y, optimizer=bp.Adam(1e-2), epochs=30, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    assert model.evaluate(X, y)["accuracy"] > 0.8


def test_input_and_identity_names():
    model = bp.Sequential([bp.Input(4), bp.Dense(3, activation=None), bp.Dense(2, "linear")])
    assert model.input_dim == 4
    assert [layer.activation for layer in model.layers] == ["identity", "identity"]
    assert bp.Activation("linear").activation == "identity"
    assert bp.Input(shape=(7,)).n == 7


@pytest.mark.parametrize("make, exc, match", [
    (lambda: bp.Activation("swishy"), ValueError, r"Unknown activation 'swishy'. Valid values"),
    (lambda: bp.Activation(3), TypeError, r"Received: activation=3"),
    (lambda: bp.LayerNormalization(epsilon=0), ValueError, r"positive.*Received: epsilon=0"),
    (lambda: bp.LayerNormalization(center=1), TypeError, r"Received: center=1"),
    (lambda: bp.BatchNormalization(momentum=1.0), ValueError, r"\[0, 1\).*Received: momentum"),
    (lambda: bp.BatchNormalization(epsilon=-1.0), ValueError, r"Received"),
    (lambda: bp.Residual([]), ValueError, r"at least one layer. Received: \[\]"),
    (lambda: bp.Residual([bp.SGD()]), TypeError, r"holds bp layers. Received"),
    (lambda: bp.Residual(bp.Dense(3)), TypeError, r"list of layers. Received"),
    (lambda: bp.Input(0), ValueError, r"Received"),
    (lambda: bp.Input(shape=(3, 4)), ValueError, r"1-tuple.*Received: n=None, shape=\(3, 4\)"),
    (lambda: bp.Sequential([bp.Dense(3), bp.Input(4)]), ValueError, r"comes first.*Received"),
])
def test_bad_arguments_are_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_a_residual_block_that_changes_the_width_names_the_widths():
    model = bp.Sequential([bp.Dense(6), bp.Residual([bp.Dense(4)]), bp.Dense(2)])
    with pytest.raises(ValueError, match=r"its input is 6 wide\. Received: a block whose "
                                         r"output is 4 wide"):
        model.build(3)
    assert not model.built


def test_the_output_layer_must_meet_the_loss():
    model = bp.Sequential([bp.Dense(3), bp.LayerNormalization()])
    with pytest.raises(ValueError, match=r"output layer must be a Dense or an Activation.*"
                                         r"Received: LayerNormalization"):
        model.build(2)
    with pytest.raises(ValueError, match=r"needs a Dense layer"):
        bp.Sequential([bp.Activation("softmax")]).build(2)


def test_batch_norm_refuses_a_training_batch_of_one_row():
    X, y = _data(n=9)
    model = _model([bp.Dense(4), bp.BatchNormalization(), bp.Dense(3, "softmax")])
    before = model.get_flat_params()
    with pytest.raises(ValueError, match=r"at least 2 rows.*Received: 9 rows in batches of "
                                         r"batch_size=4"):
        model.fit(X, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_flat_params(), before)
    model.fit(X, y, batch_size=3, epochs=1, verbose=0)  # 3 + 3 + 3: fine
    model.predict(X[:1])  # inference: one row is fine


def test_every_layer_saves_loads_and_pickles(tmp_path):
    import pickle

    X, y = _data(n=24)
    model = bp.Sequential([bp.Input(5), bp.Dropout(0.1), bp.Dense(6),
                           bp.Residual([bp.BatchNormalization(momentum=0.8), bp.Dense(8, "relu"),
                                        bp.Dropout(0.2), bp.Dense(6)]),
                           bp.LayerNormalization(center=False), bp.Activation("tanh"),
                           bp.Dense(3, "softmax")], dtype="float64", seed=2)
    model.fit(X, y, optimizer=bp.Adam(1e-2), epochs=2, batch_size=6, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    for copy in (bp.load(path), pickle.loads(pickle.dumps(model))):
        assert copy.get_config()["layers"] == model.get_config()["layers"]
        np.testing.assert_array_equal(copy.get_flat_params(), model.get_flat_params())
        np.testing.assert_array_equal(copy.layers[2].layers[0].running,
                                      model.layers[2].layers[0].running)
        np.testing.assert_array_equal(copy.predict(X), model.predict(X))
    again = bp.load(path)  # trains on alike: the same masks, statistics and optimizer state
    for m in (model, again):
        m.fit(X, y, epochs=1, batch_size=6, verbose=0)
    np.testing.assert_array_equal(again.get_flat_params(), model.get_flat_params())
    text = model.summary(to_string=True)  # summary() prints and returns None (Keras)
    for name in ("dropout_0", "residual_2", "  batchnormalization_0", "  dropout_2",
                 "layernormalization_3", "activation_4"):
        assert name in text
    assert f"Total params: {model.n_params:,}" in text


def test_a_file_of_format_1_still_loads(tmp_path, monkeypatch):
    # format 1 wrote Dense layers with their folded Dropout and no running statistics
    X, y = _data(n=12)
    model = bp.Sequential([bp.Dense(4, "relu"), bp.Dropout(0.5), bp.Dense(3, "softmax")],
                          seed=0)
    model.fit(X, y, epochs=1, verbose=0)
    config = model.get_config()
    config["optimizer"], config["rng_state"] = None, None
    bp._io.write(tmp_path / "old.npz", config, {"params": model._params}, version=1)
    loaded = bp.load(tmp_path / "old.npz")
    assert repr(loaded) == repr(model)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_features_for_dense_stacks_refuse_other_layers_by_name():
    X, y = _data(n=10)
    model = _model([bp.Dense(4), bp.LayerNormalization(), bp.Dense(3, "softmax")])
    for call, what in [(lambda: bp.explain(model, X, y), "explain"),
                       (lambda: model.diagnose(X, y), "diagnose"),
                       (lambda: model[1:], "a slice")]:
        with pytest.raises(ValueError, match=rf"{what}.*Received: .*LayerNormalization"):
            call()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_new_operations_are_bit_identical_for_1_and_2_threads(dtype):
    # batches of 512 rows x 64 units: the row passes of the norms and activations run on 2
    # threads; BLAS is held to 1 thread in both runs, as in test_threads_api.py
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((1024, 32)), rng.integers(0, 3, 1024)

    def train(n_threads):
        model = bp.Sequential([bp.Dense(64), bp.Residual([bp.LayerNormalization(),
                                                          bp.Dense(64, "gelu"), bp.Dropout(0.2),
                                                          bp.Dense(64)]),
                               bp.BatchNormalization(), bp.Activation("tanh"),
                               bp.Dense(3, "softmax")], dtype=dtype, seed=1)
        with bp.num_threads(n_threads), threadpool_limits(limits=1, user_api="blas"):
            model.fit(X, y, optimizer=bp.Adam(1e-3), epochs=2, batch_size=512, verbose=0)
            model._passes.engine(shared=False)  # (the table is per model, not per thread)
        return model.get_flat_params(), model.predict(X)

    (p1, f1), (p2, f2) = train(1), train(2)
    assert p1.tobytes() == p2.tobytes()
    assert f1.tobytes() == f2.tobytes()


def test_input_shape_is_input_dim():
    assert bp.Sequential([bp.Dense(2)], input_shape=(5,)).input_dim == 5
    with pytest.raises(ValueError, match=r"not both\. Received: input_dim=4, input_shape=\(5,\)"):
        bp.Sequential([bp.Dense(2)], input_dim=4, input_shape=(5,))
    with pytest.raises(ValueError, match=r"1-tuple"):
        bp.Sequential([bp.Dense(2)], input_shape=5)


def test_a_non_finite_value_inside_a_residual_block_names_its_layer():
    X, y = _data(n=8)
    model = _model([bp.Dense(4), bp.Residual([bp.Dense(4, "relu"), bp.Dense(4)]), bp.Dense(3)])
    model.layers[1].layers[1].W = np.full((4, 4), 1e308)  # the block's last Dense overflows
    passes = model._passes
    loss, Xc, Y, w = bp._passes.prepare(model, X, np.eye(3)[y], "mse")
    passes.backward(Xc, Y, w, passes.workspace(8), loss, 1.0, 0.0, passes.grads, 1)
    layer, sample, where = passes.first_non_finite(Xc)
    assert (layer, where) == (1, "forward (z_out)")  # the Residual, model.layers[1]


def test_a_refused_fit_leaves_ctrl_c_as_it_was():
    # the one-row check runs before fit defers Ctrl-C: a refused fit leaves no handler behind
    import signal

    before = signal.getsignal(signal.SIGINT)
    model = _model([bp.Dense(4), bp.BatchNormalization(), bp.Dense(3, "softmax")])
    X, y = _data(n=5)
    with pytest.raises(ValueError, match="at least 2 rows"):
        model.fit(X, y, batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        model.partial_fit(X, y, batch_size=4)
    assert signal.getsignal(signal.SIGINT) is before
