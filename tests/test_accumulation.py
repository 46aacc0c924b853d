"""Gradient accumulation: micro-batches whose output_delta carries the scale of the whole batch,
accumulated with gradients(beta=1), give the full-batch gradient."""

import numpy as np
import pytest

from bp import _reference as R
from bp import kernels as K

from .conftest import assert_close
from .test_error_signal import PAIRS, targets

SIZES = (6, 40, 50, 3)  # the middle layer is above the own-loop gemm threshold for most chunks
N = 37
ALPHA = 0.2


def layer_gradients(X, y, Ws, bs, activations, loss, sample_weight, scale, grads=None, beta=0.0):
    """Forward and backward through the kernels; gradients written (beta=0) or added (beta=1)
    into `grads`."""
    z_ins, z_outs, z = [], [], X
    for W, b, act in zip(Ws, bs, activations):
        z_in, z = K.dense_forward(z, W, b, act, ALPHA)
        z_ins.append(z_in)
        z_outs.append(z)
    delta = K.output_delta(z_ins[-1], z_outs[-1], y, loss, activations[-1], ALPHA, sample_weight,
                           scale)
    if grads is None:
        grads = [(np.empty_like(W), np.empty_like(b)) for W, b in zip(Ws, bs)]
    for i in range(len(Ws) - 1, -1, -1):
        K.gradients(X if i == 0 else z_outs[i - 1], delta, beta, *grads[i])
        if i:
            delta = K.hidden_delta(delta, Ws[i], z_ins[i - 1], z_outs[i - 1], activations[i - 1],
                                   ALPHA)
    return grads


@pytest.mark.parametrize("loss, tau", [p for p in PAIRS if p[0] != "mse"] + [("mse", "tanh")])
@pytest.mark.parametrize("chunks", [(37,), (1, 36), (10, 10, 10, 7), (1,) * 37])
@pytest.mark.parametrize("weighted", (False, True))
def test_micro_batches_equal_full_batch(rng, dtype, loss, tau, chunks, weighted):
    activations = ("gelu", "leaky_relu", tau)
    X = rng.standard_normal((N, SIZES[0])).astype(dtype)
    y = targets(rng, loss, N, SIZES[-1], dtype)
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
          for a, b in zip(SIZES[:-1], SIZES[1:])]
    bs = [rng.standard_normal(b).astype(dtype) for b in SIZES[1:]]
    w = rng.uniform(0.5, 2, N).astype(dtype) if weighted else None
    full_scale = R.default_scale(loss, N, SIZES[-1])  # the reduction of the whole batch

    full = layer_gradients(X, y, Ws, bs, activations, loss, w, full_scale)
    acc = None
    start = 0
    for size in chunks:
        part = slice(start, start + size)
        acc = layer_gradients(X[part], y[part], Ws, bs, activations, loss,
                              None if w is None else w[part], full_scale, acc,
                              beta=0.0 if acc is None else 1.0)
        start += size
    assert start == N
    for (gW, gb), (fW, fb) in zip(acc, full):
        # the same terms summed in another grouping: rounding of a sum of N terms
        assert_close(gW, fW, dtype, k=N)
        assert_close(gb, fb, dtype, k=N)
    # and the full-batch kernel gradients are the reference's
    _, _, rWs, rbs = R.backward(X.astype(np.float64), y.astype(np.float64),
                                [W.astype(np.float64) for W in Ws],
                                [b.astype(np.float64) for b in bs], activations, loss, ALPHA,
                                None if w is None else w.astype(np.float64), full_scale)
    for (fW, fb), rW, rb in zip(full, rWs, rbs):
        assert_close(fW, rW, dtype, k=N * SIZES[1])
        assert_close(fb, rb, dtype, k=N * SIZES[1])
