"""Property-based tests (hypothesis): random networks, the kernels against the NumPy reference,
and the gradients against central finite differences.

A network is drawn as: 1 to 5 Dense layers of widths 1 to 64, an input width of 1 to 64, a batch
of 1 to 70 rows, float32 or float64, every activation (softmax included) in the hidden layers, a
loss with an output activation it accepts (mse: any; binary cross-entropy: sigmoid; cross-entropy:
softmax), bias on or off per layer, leaky_relu's alpha, optional sample weights. The arrays are
drawn by NumPy from a drawn seed (hypothesis shrinks the sizes and choices, which is what a
failure report needs).

Profiles (tests/_hypothesis_profiles.py): "ci" by default, 50 derandomized examples per property;
BP_HYPOTHESIS_PROFILE=thorough for 1000 random ones.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import bp
from bp import _reference as R

try:  # tests/ as a package (it has an __init__.py) or as a plain directory on sys.path
    from ._hypothesis_profiles import PROPERTY_SETTINGS
except ImportError:
    from _hypothesis_profiles import PROPERTY_SETTINGS

ACTIVATIONS = tuple(bp.layers.ACTIVATIONS)
OUTPUTS = {"mse": ACTIVATIONS, "binary_cross_entropy": ("sigmoid",), "cross_entropy": ("softmax",)}
KINKED = ("relu", "leaky_relu")  # sigma' jumps at 0: finite differences must not straddle it


@st.composite
def networks(draw, dtypes=("float32", "float64")):
    n_layers = draw(st.integers(1, 5))
    widths = draw(st.lists(st.integers(1, 64), min_size=n_layers, max_size=n_layers))
    loss = draw(st.sampled_from(sorted(OUTPUTS)))
    tau = draw(st.sampled_from(OUTPUTS[loss]))
    if loss == "cross_entropy" and widths[-1] == 1:
        widths[-1] = draw(st.integers(2, 64))  # one class is not a classification
    hidden = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=n_layers - 1, max_size=n_layers - 1))
    return {
        "n_in": draw(st.integers(1, 64)),
        "widths": widths,
        "activations": hidden + [tau],
        "use_bias": draw(st.lists(st.booleans(), min_size=n_layers, max_size=n_layers)),
        "alpha": draw(st.sampled_from([0.0, 0.01, 0.3])),
        "loss": loss,
        "batch": draw(st.integers(1, 70)),
        "dtype": draw(st.sampled_from(dtypes)),
        "weighted": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def build(net):
    """The model (random weights, random biases) and its data."""
    rng = np.random.default_rng(net["seed"])
    layers = [bp.Dense(w, activation=a, use_bias=b, alpha=net["alpha"])
              for w, a, b in zip(net["widths"], net["activations"], net["use_bias"])]
    model = bp.Sequential(layers, dtype=net["dtype"], seed=net["seed"] % 2**31)
    model.build(net["n_in"])
    for L in model.layers:
        if L.use_bias:
            L.b = rng.normal(0, 0.5, L.units)
    n, m = net["batch"], net["widths"][-1]
    X = rng.standard_normal((n, net["n_in"]))
    if net["loss"] == "cross_entropy":
        y = rng.integers(0, m, n)
        Y = np.eye(m)[y]
    elif net["loss"] == "binary_cross_entropy":
        y = Y = rng.random((n, m))
    else:
        y = Y = rng.standard_normal((n, m))
    w = rng.random(n) * 2 if net["weighted"] else None
    return model, X, y, Y, w


def reference_weights(model):
    return ([L.W.astype(np.float64) for L in model.layers],
            [None if L.b is None else L.b.astype(np.float64) for L in model.layers])


def rel_err(actual, desired):
    """||actual - desired|| / max(||desired||, tiny): one number per array, robust to entries
    that cancel to near zero (where an elementwise rtol would be meaningless)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    return np.linalg.norm(actual - desired) / max(np.linalg.norm(desired), 1e-30)


# float32: the model computes in float32 and the oracle in float64 on the same (rounded) inputs;
# through up to 5 layers of width 64 and 70-row sums the norm-wise error stays near
# sqrt(k) * eps32 ~ 1e-6; 1e-3 leaves room for sums that cancel. float64: the two differ only in
# summation order.
TOL = {"float32": 1e-3, "float64": 1e-9}
# Entries below this are rounding noise of a sum of ~1 terms: compare the norms of such arrays
# absolutely.
ABS = {"float32": 1e-5, "float64": 1e-12}


def assert_near(actual, desired, dtype, what):
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, what
    err = np.linalg.norm(actual - desired)
    assert err <= TOL[dtype] * np.linalg.norm(desired) + ABS[dtype] * np.sqrt(desired.size), (
        f"{what}: relative error {rel_err(actual, desired):.3g}")


@PROPERTY_SETTINGS
@given(networks())
def test_kernels_equal_the_numpy_reference(net):
    model, X, y, Y, w = build(net)
    dt = net["dtype"]
    Xd = X.astype(dt).astype(np.float64)  # the oracle sees the inputs the model sees
    wd = None if w is None else w.astype(dt).astype(np.float64)
    Ws, bs = reference_weights(model)
    acts, loss = net["activations"], net["loss"]

    z_ins, z_outs = R.forward(Xd, Ws, bs, acts, net["alpha"])
    f_out = model.predict(X)
    assert f_out.dtype == np.dtype(dt)
    assert_near(f_out, z_outs[-1], dt, "f_out")

    L, deltas, gWs, gbs = R.backward(Xd, Y, Ws, bs, acts, loss, net["alpha"], sample_weight=wd)
    assert_near(model.evaluate(X, y, loss=loss, sample_weight=w)["loss"], L, dt, "loss")
    grads = model.gradients(X, y, loss=loss, sample_weight=w)
    for i, ((gW, gb), rW, rb, d, rd) in enumerate(zip(grads, gWs, gbs, model.error_signals, deltas)):
        assert_near(d, rd, dt, f"delta[{i}]")
        assert_near(gW, rW, dt, f"grad_W[{i}]")
        if rb is None:
            assert gb is None
        else:
            assert_near(gb, rb, dt, f"grad_b[{i}]")


def _kink_crossed(model, X, net, flat_a, flat_b):
    """True if some relu/leaky_relu input changes sign between the two parameter vectors."""
    if not any(a in KINKED for a in net["activations"]):
        return False
    signs = []
    for flat in (flat_a, flat_b):
        model.set_flat_params(flat)
        Ws, bs = reference_weights(model)
        z_ins, _ = R.forward(X, Ws, bs, net["activations"], net["alpha"])
        signs.append([np.signbit(z) | (z == 0) for z, a in zip(z_ins, net["activations"]) if a in KINKED])
    return any((a != b).any() for a, b in zip(*signs))


@pytest.mark.parametrize("loss, tau", [("mse", "identity"), ("binary_cross_entropy", "sigmoid")])
def test_reported_loss_is_pytorch_mean(loss, tau):
    # logits f_in = 0.7 everywhere (off 0, where binary cross-entropy is log 2 for any target)
    model = bp.Sequential([bp.Dense(3, activation=tau, kernel_initializer="zeros")], dtype="float64", seed=0)
    model.build(2)
    model[0].W = np.full((2, 3), 0.35)
    X, Y = np.ones((4, 2)), np.tile([0.0, 0.5, 1.0], (4, 1))
    if loss == "mse":
        expected = np.mean((0.7 - Y) ** 2)
    else:  # torch.nn.BCELoss on p = sigmoid(0.7), written out
        p = 1.0 / (1.0 + np.exp(-0.7))
        expected = np.mean(-(Y * np.log(p) + (1 - Y) * np.log(1 - p)))
        assert abs(expected - np.log(2.0)) > 0.05  # the targets now matter
    assert abs(model.evaluate(X, Y, loss=loss)["loss"] - expected) < 1e-12


@PROPERTY_SETTINGS
@given(networks(dtypes=("float64",)), st.integers(0, 2**32 - 1))
def test_gradients_equal_central_differences(net, direction_seed):
    """dL/dp . u against (L(p + h u) - L(p - h u)) / 2h along 3 random unit directions u, all in
    float64, with bp's own loss (evaluate) on both sides: the same check as torch.autograd's
    gradcheck in its fast mode, at a cost independent of the number of parameters."""
    model, X, y, Y, w = build(net)
    loss = net["loss"]
    p0 = model.get_flat_params()
    grads = model.gradients(X, y, loss=loss, sample_weight=w)
    g = np.concatenate([np.concatenate([gW.ravel()] + ([] if gb is None else [gb]))
                        for gW, gb in grads])
    rng = np.random.default_rng(direction_seed)
    h = 1e-6
    for _ in range(3):
        u = rng.standard_normal(p0.size)
        u /= np.linalg.norm(u)
        plus, minus = p0 + h * u, p0 - h * u
        assume(not _kink_crossed(model, X, net, plus, minus))
        model.set_flat_params(plus)
        L_plus = model.evaluate(X, y, loss=loss, sample_weight=w)["loss"]
        model.set_flat_params(minus)
        L_minus = model.evaluate(X, y, loss=loss, sample_weight=w)["loss"]
        model.set_flat_params(p0)
        fd = (L_plus - L_minus) / (2 * h)
        analytic = float(g @ u)
        # truncation O(h^2) relative; rounding: L carries ~10 eps |L| of error (a sum over the
        # batch and outputs), divided by h that is ~2e-9 |L| absolute
        tol = 1e-5 * max(abs(analytic), abs(fd)) + 1e-8 * (1 + abs(L_plus))
        assert abs(fd - analytic) <= tol, (fd, analytic)


@PROPERTY_SETTINGS
@given(networks(), st.integers(1, 70), st.integers(1, 3))
def test_one_fit_step_equals_the_reference_update(net, batch_size, accumulate):
    """One epoch of plain SGD without shuffling, compared step by step with the reference:
    grads of each (accumulated) batch from R.backward with the whole step's mean reduction."""
    model, X, y, Y, w = build(net)
    dt, loss = net["dtype"], net["loss"]
    n, m = X.shape[0], Y.shape[1]
    Ws, bs = reference_weights(model)
    Xd = X.astype(dt).astype(np.float64)
    Yd = Y.astype(dt).astype(np.float64)
    wd = None if w is None else w.astype(dt).astype(np.float64)
    lr = 0.05
    step = batch_size * accumulate
    largest = 0.0  # the largest magnitude the reference met (forward, loss, deltas, gradients, update)
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        k = rows.stop - rows.start
        scale = R.default_scale(loss, k, m)
        z_ins, z_outs = R.forward(Xd[rows], Ws, bs, net["activations"], net["alpha"])
        L, deltas, gWs, gbs = R.backward(Xd[rows], Yd[rows], Ws, bs, net["activations"], loss,
                                         net["alpha"], sample_weight=None if wd is None else wd[rows],
                                         scale=scale)
        Ws = [W - lr * g for W, g in zip(Ws, gWs)]
        bs = [None if b is None else b - lr * g for b, g in zip(bs, gbs)]
        with np.errstate(invalid="ignore"):
            largest = max([largest, abs(L)] + [np.nanmax(np.abs(a), initial=0.0) if np.isfinite(a).all()
                                               else np.inf
                                               for a in (*z_ins, *z_outs, *deltas, *gWs, *Ws,
                                                         *(g for g in gbs if g is not None))])
    model.fit(X, y, loss=loss, optimizer=bp.SGD(lr), epochs=1, batch_size=batch_size,
              accumulate=accumulate, shuffle=False, sample_weight=w, verbose=0, on_nan="stop")
    if model.history.stopped is not None:
        # fit may report divergence only when the computation really leaves the dtype's range:
        # the exact (float64) values must come within a square root of its largest number
        # (where a sum of squares or an exp inside a kernel overflows)
        assert model.history.stopped == "diverged"
        assert largest > np.sqrt(np.finfo(dt).max), (
            f"fit reported divergence ({model.history.diverged}) but the reference's largest "
            f"value is {largest:.3g}")
        return
    for i, L in enumerate(model.layers):
        assert_near(L.W, Ws[i], dt, f"W[{i}]")
        if L.b is not None:
            assert_near(L.b, bs[i], dt, f"b[{i}]")
