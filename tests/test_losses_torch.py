"""The newer losses (mae, huber, poisson, cross-entropy from logits) against PyTorch's loss functions:
the loss value and delta[O] = dL/df_in (autograd through tau) in float64 to 1e-12; the aliases;
the pairings that cannot work refused before anything changes; fit with each."""

import numpy as np
import pytest

import bp
from bp import _reference as R
from bp import kernels as K
from bp import losses as L

torch = pytest.importorskip("torch")
F = torch.nn.functional

TAU = {"identity": lambda t: t, "tanh": torch.tanh, "softplus": F.softplus, "selu": F.selu,
       "exponential": torch.exp, "softmax": lambda t: F.softmax(t, dim=1)}

# (loss, tau, torch's loss of (f_in, f_out, y) with reduction="mean")
CASES = [
    ("mae", "identity", lambda f_in, f_out, y: F.l1_loss(f_out, y)),
    ("mae", "tanh", lambda f_in, f_out, y: F.l1_loss(f_out, y)),
    ("huber", "identity", lambda f_in, f_out, y: F.huber_loss(f_out, y, delta=1.0)),
    ("huber", "softplus", lambda f_in, f_out, y: F.smooth_l1_loss(f_out, y, beta=1.0)),
    ("huber", "selu", lambda f_in, f_out, y: F.huber_loss(f_out, y)),
    ("poisson", "exponential",
     lambda f_in, f_out, y: F.poisson_nll_loss(f_in, y, log_input=True, full=False)),
    ("cross_entropy", "identity", lambda f_in, f_out, y: F.cross_entropy(f_in, y)),
    ("mse", "softplus", lambda f_in, f_out, y: F.mse_loss(f_out, y)),
]


def _targets(loss, rng, n, m):
    if loss == "poisson":
        return rng.poisson(2.0, (n, m)).astype(np.float64)
    if loss == "cross_entropy":
        return rng.dirichlet(np.ones(m), n)
    return rng.standard_normal((n, m)) * 2  # |f_out - y| on both sides of huber's 1


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("loss, tau, torch_loss", CASES)
def test_loss_and_delta_equal_torch(loss, tau, torch_loss, weighted):
    rng = np.random.default_rng(0)
    n, m = 9, 4
    f_in = rng.standard_normal((n, m))
    f_out = R.sigma(tau, f_in)
    y = _targets(loss, rng, n, m)
    w = rng.uniform(0.5, 2, n) if weighted else None
    t_in = torch.tensor(f_in, requires_grad=True)
    if weighted:
        # PyTorch's mean of w_i-weighted elementwise (rowwise for cross-entropy) losses, over N
        per = {"mae": lambda a, b, c: F.l1_loss(b, c, reduction="none"),
               "huber": lambda a, b, c: F.huber_loss(b, c, reduction="none"),
               "mse": lambda a, b, c: F.mse_loss(b, c, reduction="none"),
               "poisson": lambda a, b, c: F.poisson_nll_loss(a, c, log_input=True, full=False,
                                                             reduction="none"),
               "cross_entropy": lambda a, b, c: F.cross_entropy(a, c, reduction="none")[:, None],
               }[loss](t_in, TAU[tau](t_in), torch.tensor(y))
        tw = torch.tensor(w)[:, None]
        want = (per * tw).sum() / (n * (1 if loss == "cross_entropy" else m))
    else:
        want = torch_loss(t_in, TAU[tau](t_in), torch.tensor(y))
    want.backward()
    got = K.loss_value(f_in, f_out, y, loss, sample_weight=w)
    delta = K.output_delta(f_in, f_out, y, loss, tau, sample_weight=w)
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)
    np.testing.assert_allclose(delta, t_in.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(R.output_delta(f_in, f_out, y, loss, tau, sample_weight=w),
                               t_in.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_cross_entropy_from_logits_takes_integer_labels_like_torch():
    rng = np.random.default_rng(1)
    f_in, labels = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    t = torch.tensor(f_in, requires_grad=True)
    want = F.cross_entropy(t, torch.tensor(labels))
    want.backward()
    model = bp.Sequential([bp.Dense(5, "linear")], dtype="float64")  # from logits
    model.build(5)
    model.layers[0].W, model.layers[0].b = np.eye(5), np.zeros(5)
    grads = model.gradients(f_in, labels, loss="sparse_categorical_crossentropy")
    assert model.evaluate(f_in, labels, loss="cross_entropy")["loss"] == pytest.approx(
        want.item(), rel=1e-12)
    # dL/dW = f_in.T @ delta with W = I: delta is torch's gradient w.r.t. the logits
    np.testing.assert_allclose(grads[0][0], f_in.T @ t.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_poisson_is_scikit_learns_half_deviance_up_to_a_constant():
    from sklearn.neural_network._base import poisson_loss
    rng = np.random.default_rng(2)
    y = rng.poisson(3.0, (20, 1)).astype(np.float64)
    gaps = []
    for _ in range(3):
        f_in = rng.standard_normal((20, 1))
        gaps.append(K.loss_value(f_in, np.exp(f_in), y, "poisson") - poisson_loss(y, np.exp(f_in)))
    np.testing.assert_allclose(gaps, gaps[0], rtol=1e-12)  # y log y - y, whatever f_in


ALIASES = {"mean_squared_error": "mse", "mean_absolute_error": "mae", "l1": "mae",
           "smooth_l1": "huber", "binary_crossentropy": "binary_cross_entropy",
           "bce": "binary_cross_entropy", "categorical_crossentropy": "cross_entropy",
           "sparse_categorical_crossentropy": "cross_entropy", "cross_entropy": "cross_entropy",
           "ce": "cross_entropy", "mse": "mse", "mae": "mae", "huber": "huber",
           "poisson": "poisson"}


def test_aliases():
    assert {name: L.get(name) for name in ALIASES} == ALIASES


def test_unknown_loss_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"Unknown loss 'hinge'\. Valid values: 'mse', .*'huber', "
                                         r"'poisson', .*'smooth_l1', .*Received: loss='hinge'"):
        L.get("hinge")


def _trained(tau, units=2, dtype="float64"):
    rng = np.random.default_rng(3)
    model = bp.Sequential([bp.Dense(4, "tanh"), bp.Dense(units, tau)], dtype=dtype, seed=0)
    model.fit(rng.standard_normal((30, 3)), rng.uniform(0.1, 1, (30, units)), loss="mae",
              epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("loss, tau, expected", [
    ("poisson", "identity", r"loss 'poisson' needs an output activation in \('exponential'\)\. "
                            r"Received: output activation 'identity'"),
    ("poisson", "softplus", r"Received: output activation 'softplus'"),
    ("categorical_crossentropy", "sigmoid",
     r"loss 'cross_entropy' needs an output activation in \('softmax', 'identity'\)\. "
     r"Received: output activation 'sigmoid'"),
    ("binary_crossentropy", "identity",
     r"loss 'binary_cross_entropy' needs an output activation in \('sigmoid'\)\. "
     r"Received: output activation 'identity'"),
])
def test_a_pairing_that_cannot_work_is_refused_before_anything_changes(loss, tau, expected):
    model = _trained(tau)
    before = model.get_flat_params().copy()
    iterations = model.optimizer.iterations
    X = np.random.default_rng(4).standard_normal((10, 3))
    with pytest.raises(ValueError, match=expected):
        model.fit(X, np.ones((10, 2)), loss=loss, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=expected):
        model.compile(loss=loss)
    assert model.get_flat_params().tobytes() == before.tobytes()
    assert model.optimizer.iterations == iterations and model.loss == "mae"  # fit's, kept


def test_poisson_targets_must_be_counts():
    model = _trained("exponential")
    before = model.get_flat_params().copy()
    y = np.ones((10, 2))
    y[3, 1] = -1
    with pytest.raises(ValueError, match=r"poisson targets must be non-negative \(counts or "
                                         r"rates\)\. Received: -1\.0 at row 3, column 1 of y"):
        model.fit(np.zeros((10, 3)), y, loss="poisson", epochs=1, verbose=0)
    assert model.get_flat_params().tobytes() == before.tobytes()


@pytest.mark.parametrize("loss, tau, y_of", [
    ("mae", "identity", lambda rng, n: rng.standard_normal((n, 2))),
    ("huber", "tanh", lambda rng, n: rng.standard_normal((n, 2)) * 3),
    ("poisson", "exponential", lambda rng, n: rng.poisson(2, (n, 2)).astype(float)),
    ("sparse_categorical_crossentropy", "linear", lambda rng, n: rng.integers(0, 2, n)),
])
def test_fit_runs_each_loss_compiled_and_equals_the_reference_step(loss, tau, y_of):
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((24, 3)), y_of(rng, 24)
    model = bp.Sequential([bp.Dense(5, "elu"), bp.Dense(2, tau)], dtype="float64", seed=2)
    model.build(3)
    Ws = [layer.W.copy() for layer in model.layers]
    bs = [layer.b.copy() for layer in model.layers]
    name = L.get(loss)
    Y = np.eye(2)[y] if y.ndim == 1 else y
    acts = ["elu", bp.kernels.activation_name(tau)]
    value, _, gW, gb = R.backward(X, Y, Ws, bs, acts, name)
    history = model.fit(X, y, loss=loss, epochs=1, batch_size=24, shuffle=False,
                        optimizer=bp.SGD(0.05), verbose=0)
    np.testing.assert_allclose(history["loss"][0], value, rtol=1e-12)
    assert ("accuracy" in history.history) == (name == "cross_entropy")
    for layer, W, b, g, h in zip(model.layers, Ws, bs, gW, gb):
        np.testing.assert_allclose(layer.W, W - 0.05 * g, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(layer.b, b - 0.05 * h, rtol=1e-12, atol=1e-14)


def test_an_exponential_output_trains_with_poisson_by_default():
    assert L.default_loss("exponential") == "poisson"
    model = bp.Sequential([bp.Dense(1, "exponential")], seed=0)
    rng = np.random.default_rng(6)
    X = rng.standard_normal((200, 2))
    y = rng.poisson(np.exp(0.5 * X[:, :1] - 0.2))
    h = model.fit(X, y, epochs=30, optimizer=bp.Adam(0.05), verbose=0)
    assert h["loss"][-1] < h["loss"][0]
    np.testing.assert_allclose(model.layers[0].W[:, 0], [0.5, 0.0], atol=0.2)
