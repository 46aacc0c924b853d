"""The newer compiled activations against PyTorch's forward and derivative (torch.nn.functional and
autograd): float64 to 1e-12, float32 to the dtype's tolerance; their NumPy twins alike; finite
differences in float64; the aliases (None, "linear", "swish")."""

import numpy as np
import pytest

import bp
from bp import _reference as R
from bp import kernels as K

from .conftest import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH = {"elu": F.elu, "selu": F.selu, "silu": F.silu, "softplus": F.softplus, "mish": F.mish,
         "hard_sigmoid": F.hardsigmoid, "exponential": torch.exp}
NEW = list(TORCH)


def _points(dtype):
    """A grid over [-30, 30] with the edges of each formula: 0, +-3 (hard_sigmoid), 20
    (softplus' threshold), tiny and huge magnitudes."""
    z = np.concatenate([np.linspace(-30, 30, 1201), [0.0, -3.0, 3.0, -2.999, 2.999, 20.0, 20.001,
                                                     19.999, 1e-8, -1e-8, -80.0]])
    return z.astype(dtype).reshape(1, -1)


def _torch_forward_backward(name, z):
    t = torch.tensor(z, requires_grad=True)
    out = TORCH[name](t)
    out.backward(torch.ones_like(out))
    return out.detach().numpy(), t.grad.numpy()


def _bp_forward_backward(kernels, name, z):
    m = z.shape[1]
    eye = np.eye(m, dtype=z.dtype)  # z_out_prev @ I = z, so dense_forward is sigma alone
    z_in, z_out = kernels.dense_forward(z, eye, None, name)
    grad = kernels.hidden_delta(np.ones_like(z), eye, z_in, z_out, name)  # 1 * sigma'(z)
    return z_out, grad


@pytest.mark.parametrize("kernels", [K, R], ids=["kernel", "twin"])
@pytest.mark.parametrize("name", NEW)
def test_matches_torch(kernels, name, dtype):
    z = _points(dtype)
    want, want_grad = _torch_forward_backward(name, z)
    got, got_grad = _bp_forward_backward(kernels, name, z)
    assert_close(got, want, dtype, err_msg=f"{name} forward")
    if name == "hard_sigmoid" and dtype == np.float64:
        # torch's float64 backward multiplies by float(1/6) = 0.16666667163 (its one_sixth is a
        # float32 constant); bp uses the exact 1/6: 3e-8 relative apart, bp the exact one
        np.testing.assert_allclose(got_grad, want_grad, rtol=3.2e-8)
        np.testing.assert_array_equal(got_grad, np.where(np.abs(z) < 3, 1 / 6, 0))
    else:
        assert_close(got_grad, want_grad, dtype, err_msg=f"{name} derivative")


@pytest.mark.parametrize("name", NEW)
def test_derivative_is_the_finite_difference(name):
    rng = np.random.default_rng(0)
    z = rng.uniform(-6, 6, (1, 400))
    z = z[:, np.abs(np.abs(z[0]) - 3) > 1e-3]  # hard_sigmoid's kinks
    z = z[:, np.abs(z[0]) > 1e-3]             # elu's and selu's
    _, grad = _bp_forward_backward(K, name, z)
    h = 1e-6
    numeric = (K.dense_forward(z + h, np.eye(z.shape[1]), None, name)[1]
               - K.dense_forward(z - h, np.eye(z.shape[1]), None, name)[1]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NEW)
def test_threads_bit_identical(name, dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 64)).astype(dtype)
    W = rng.standard_normal((64, 300)).astype(dtype) / 8
    b = rng.standard_normal(300).astype(dtype)
    one = K.dense_forward(X, W, b, name, n_threads=1)
    two = K.dense_forward(X, W, b, name, n_threads=2)
    assert one[1].tobytes() == two[1].tobytes()
    W_next = np.ascontiguousarray(W[:30].T)  # (300, 30)
    d1 = K.hidden_delta(X[:, :30], W_next, one[0], one[1], name, n_threads=1)
    d2 = K.hidden_delta(X[:, :30], W_next, one[0], one[1], name, n_threads=2)
    assert d1.tobytes() == d2.tobytes()


def test_aliases():
    assert bp.Dense(3, None).activation == "identity"
    assert bp.Dense(3, "linear").activation == "identity"
    assert bp.Dense(3, "swish").activation == "silu"
    z = _points(np.float64)
    eye = np.eye(z.shape[1])
    assert (K.dense_forward(z, eye, None, "swish")[1].tobytes()
            == K.dense_forward(z, eye, None, "silu")[1].tobytes())


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown activation 'gelu_tanh'\. Valid values: "
                                         r"'identity', .*'exponential', 'linear', 'swish'\. "
                                         r"Received: activation='gelu_tanh'"):
        bp.Dense(3, "gelu_tanh")


@pytest.mark.parametrize("name", NEW)
def test_a_network_with_each_trains_compiled_and_matches_the_python_step(name):
    # the compiled engine runs every activation code; its step equals the NumPy twin's backward
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    model = bp.Sequential([bp.Dense(7, name), bp.Dense(3, "softmax")], dtype="float64", seed=1)
    model.build(5)
    Ws = [layer.W.copy() for layer in model.layers]
    bs = [layer.b.copy() for layer in model.layers]
    Y = np.eye(3)[y]
    _, _, gW, gb = R.backward(X, Y, Ws, bs, [name, "softmax"], "cross_entropy")
    model.fit(X, y, epochs=1, batch_size=40, optimizer=bp.SGD(0.1), verbose=0, shuffle=False)
    for layer, W, b, g, h in zip(model.layers, Ws, bs, gW, gb):
        np.testing.assert_allclose(layer.W, W - 0.1 * g, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(layer.b, b - 0.1 * h, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NEW + ["swish"])
def test_an_activation_layer_is_the_dense_activation(name):
    # bp.Activation(name) after a linear Dense trains exactly as the Dense with that activation
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    fused = bp.Sequential([bp.Dense(6, name), bp.Dense(3, "softmax")], dtype="float64", seed=0)
    split = bp.Sequential([bp.Dense(6), bp.Activation(name), bp.Dense(3, "softmax")],
                          dtype="float64", seed=0)
    fused.build(4)
    split.build(4)
    split.set_flat_params(fused.get_flat_params())
    for model in (fused, split):
        model.fit(X, y, epochs=2, batch_size=10, shuffle=False, optimizer=bp.SGD(0.1), verbose=0)
    np.testing.assert_allclose(split.get_flat_params(), fused.get_flat_params(), rtol=1e-12,
                               atol=1e-14)
