"""Whole-network gradients from the kernels, chained as training chains them (forward per layer,
output_delta, hidden_delta backwards, gradients), against central finite differences of the NumPy
reference's network loss in float64: every hidden activation, every valid loss/output pair.

The tolerances are torch.autograd.gradcheck's: eps 1e-6, atol 1e-5, rtol 1e-3.
"""

import numpy as np
import pytest

from bp import _reference as R
from bp import kernels as K

from .test_error_signal import PAIRS, targets

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3
SIZES = (3, 5, 4, 3)  # 3 inputs, hidden layers of 5 and 4 units, 3 outputs
N = 6
ALPHA = 0.2
KINKED = ("relu", "leaky_relu")


def kernel_backprop(X, y, Ws, bs, activations, loss, sample_weight=None, scale=None):
    """(grads_W, grads_b) through bp.kernels, layer by layer."""
    z_ins, z_outs = [], []
    z = X
    for W, b, act in zip(Ws, bs, activations):
        z_in, z = K.dense_forward(z, W, b, act, ALPHA)
        z_ins.append(z_in)
        z_outs.append(z)
    deltas = [None] * len(Ws)
    deltas[-1] = K.output_delta(z_ins[-1], z_outs[-1], y, loss, activations[-1], ALPHA,
                                sample_weight, scale)
    for i in range(len(Ws) - 2, -1, -1):
        deltas[i] = K.hidden_delta(deltas[i + 1], Ws[i + 1], z_ins[i], z_outs[i], activations[i],
                                   ALPHA)
    grads = [K.gradients(X if i == 0 else z_outs[i - 1], deltas[i]) for i in range(len(Ws))]
    return [g[0] for g in grads], [g[1] for g in grads], z_ins


def network(rng, activations, loss):
    """A random network and batch whose pre-activations stay clear of relu's kink: a perturbation
    of EPS must not cross z_in = 0, or the finite difference measures a different branch."""
    while True:
        X = rng.standard_normal((N, SIZES[0]))
        Ws = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(SIZES[:-1], SIZES[1:])]
        bs = [rng.standard_normal(b) * 0.1 for b in SIZES[1:]]
        z_ins, _ = R.forward(X, Ws, bs, activations, ALPHA)
        if all(np.abs(z).min() > 1e-3 for z, act in zip(z_ins, activations) if act in KINKED):
            return X, targets(rng, loss, N, SIZES[-1], np.float64), Ws, bs


def numeric_gradient(f, param):
    """Central differences of f() with respect to each entry of `param` (perturbed in place)."""
    grad = np.zeros_like(param)
    for idx in np.ndindex(*param.shape):
        saved = param[idx]
        param[idx] = saved + EPS
        up = f()
        param[idx] = saved - EPS
        down = f()
        param[idx] = saved
        grad[idx] = (up - down) / (2 * EPS)
    return grad


def check_network(rng, hidden, loss, tau, sample_weight=False, scale=None):
    activations = (hidden, hidden, tau)
    X, y, Ws, bs = network(rng, activations, loss)
    w = rng.uniform(0.5, 2.0, N) if sample_weight else None
    gWs, gbs, _ = kernel_backprop(X, y, Ws, bs, activations, loss, w, scale)

    def L():
        return R.network_loss(X, y, Ws, bs, activations, loss, ALPHA, w, scale)

    for i in range(len(Ws)):
        np.testing.assert_allclose(gWs[i], numeric_gradient(L, Ws[i]), rtol=RTOL, atol=ATOL,
                                   err_msg=f"grad_W of layer {i}")
        np.testing.assert_allclose(gbs[i], numeric_gradient(L, bs[i]), rtol=RTOL, atol=ATOL,
                                   err_msg=f"grad_b of layer {i}")
    # and the reference's own backpropagation agrees with the kernels to rounding
    _, _, rWs, rbs = R.backward(X, y, Ws, bs, activations, loss, ALPHA, w, scale)
    for g, r in zip(gWs + gbs, rWs + rbs):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("hidden", K.ACTIVATIONS)
@pytest.mark.parametrize("loss, tau", PAIRS)
def test_network_gradient(rng, hidden, loss, tau):
    check_network(rng, hidden, loss, tau)


@pytest.mark.parametrize("loss, tau", [("mse", "identity"), ("mse", "softmax"),
                                       ("binary_cross_entropy", "sigmoid"),
                                       ("cross_entropy", "softmax")])
def test_network_gradient_weighted_and_scaled(rng, loss, tau):
    check_network(rng, "tanh", loss, tau, sample_weight=True, scale=0.37)

