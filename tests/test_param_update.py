"""bp.kernels.sgd_update, adam_update (Adam and AdamW) and sum_of_squares, over several steps,
against the NumPy twin AND against an independent scalar transcription of torch.optim's published
rules (the algorithm boxes in the torch.optim.SGD / Adam / AdamW documentation), written below
without NumPy so that it shares no code or array semantics with either."""

import math

import numpy as np
import pytest

from bp import _reference as R
from bp import kernels as K
from bpcore import _openmp

from .conftest import assert_close

STEPS = 5


# ---- torch.optim's rules, one scalar at a time -------------------------------------------------------


class TorchSGD:
    """torch.optim.SGD (dampening 0, maximize False) for a list of floats."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.p, self.lr, self.mu, self.nesterov, self.wd = list(params), lr, momentum, nesterov, weight_decay
        self.buf = None  # torch creates the momentum buffer on the first step as a copy of g

    def step(self, grads):
        if self.mu != 0 and self.buf is None:
            self.buf = [0.0] * len(self.p)
            first = True
        else:
            first = False
        for i, grad in enumerate(grads):
            g = grad + self.wd * self.p[i]
            if self.mu != 0:
                self.buf[i] = g if first else self.mu * self.buf[i] + g
                g = g + self.mu * self.buf[i] if self.nesterov else self.buf[i]
            self.p[i] = self.p[i] - self.lr * g


class TorchAdam:
    """torch.optim.Adam (amsgrad False) or, with decoupled=True, torch.optim.AdamW."""

    def __init__(self, params, lr, betas, eps, weight_decay=0.0, decoupled=False):
        self.p = list(params)
        self.lr, (self.b1, self.b2), self.eps, self.wd, self.decoupled = lr, betas, eps, weight_decay, decoupled
        self.m = [0.0] * len(self.p)
        self.v = [0.0] * len(self.p)
        self.t = 0

    def step(self, grads):
        self.t += 1
        for i, grad in enumerate(grads):
            if self.decoupled:
                self.p[i] = self.p[i] - self.lr * self.wd * self.p[i]
                g = grad
            else:
                g = grad + self.wd * self.p[i]
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            m_hat = self.m[i] / (1 - self.b1**self.t)
            v_hat = self.v[i] / (1 - self.b2**self.t)
            self.p[i] = self.p[i] - self.lr * m_hat / (math.sqrt(v_hat) + self.eps)


# ---- SGD -------------------------------------------------------------------------------------------

SGD_CONFIGS = {
    "plain": dict(momentum=0.0, nesterov=False, weight_decay=0.0),
    "momentum": dict(momentum=0.9, nesterov=False, weight_decay=0.0),
    "nesterov": dict(momentum=0.9, nesterov=True, weight_decay=0.0),
    "weight_decay": dict(momentum=0.0, nesterov=False, weight_decay=0.05),
    "all": dict(momentum=0.9, nesterov=True, weight_decay=0.05),
}


@pytest.mark.parametrize("config", SGD_CONFIGS)
@pytest.mark.parametrize("shape", [(7,), (4, 5)])
@pytest.mark.parametrize("grad_scale", [1.0, 0.5])
def test_sgd_steps(rng, dtype, config, shape, grad_scale):
    kw = SGD_CONFIGS[config]
    lr = 0.1
    start = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(STEPS)]
    p, p_ref = start.copy(), start.copy()
    vel, vel_ref = np.zeros(shape, dtype), np.zeros(shape, dtype)
    torch = TorchSGD(start.ravel().tolist(), lr, **kw)
    for g in grads:
        assert K.sgd_update(p, g, vel, lr, grad_scale=grad_scale, **kw) is p
        R.sgd_update(p_ref, g, vel_ref, lr, grad_scale=grad_scale, **kw)
        torch.step((grad_scale * g.astype(np.float64)).ravel().tolist())
    assert p.dtype == dtype and p.shape == shape
    assert_close(p, p_ref, dtype, k=STEPS)
    assert_close(vel, vel_ref, dtype, k=STEPS)
    assert_close(p.ravel(), torch.p, dtype, k=STEPS)


# ---- Adam / AdamW ------------------------------------------------------------------------------------

ADAM_CONFIGS = {
    "adam": dict(weight_decay=0.0, decoupled=False),
    "adam_l2": dict(weight_decay=0.05, decoupled=False),
    "adamw": dict(weight_decay=0.05, decoupled=True),
}


@pytest.mark.parametrize("config", ADAM_CONFIGS)
@pytest.mark.parametrize("shape", [(7,), (4, 5)])
@pytest.mark.parametrize("grad_scale", [1.0, 0.5])
def test_adam_steps(rng, dtype, config, shape, grad_scale):
    kw = ADAM_CONFIGS[config]
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-6  # not the defaults, so a dropped argument shows
    start = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(STEPS)]
    p, p_ref = start.copy(), start.copy()
    m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
    m_ref, v_ref = np.zeros(shape, dtype), np.zeros(shape, dtype)
    torch = TorchAdam(start.ravel().tolist(), lr, (b1, b2), eps, **kw)
    for t, g in enumerate(grads, start=1):
        assert K.adam_update(p, g, m, v, t, lr, b1, b2, eps, grad_scale=grad_scale, **kw) is p
        R.adam_update(p_ref, g, m_ref, v_ref, t, lr, b1, b2, eps, grad_scale=grad_scale, **kw)
        torch.step((grad_scale * g.astype(np.float64)).ravel().tolist())
    assert_close(p, p_ref, dtype, k=STEPS)
    assert_close(m, m_ref, dtype, k=STEPS)
    assert_close(v, v_ref, dtype, k=STEPS)
    assert_close(p.ravel(), torch.p, dtype, k=STEPS)
    assert_close(m.ravel(), torch.m, dtype, k=STEPS)
    assert_close(v.ravel(), torch.v, dtype, k=STEPS)


def test_adam_first_step_moves_each_weight_by_lr(dtype):
    # A property of the published rule: at t = 1 the bias-corrected step is lr * g / (|g| + eps),
    # i.e. lr * sign(g) whenever |g| >> eps, whatever the size of g.
    p = np.zeros(4, dtype)
    g = np.array([1e-3, -2.0, 5.0, -1e2], dtype)
    K.adam_update(p, g, np.zeros(4, dtype), np.zeros(4, dtype), 1, learning_rate=0.1, eps=1e-8)
    g64 = g.astype(np.float64)
    assert_close(p, -0.1 * g64 / (np.abs(g64) + 1e-8), dtype)
    # and lr * sign(g) to within eps / |g| <= 1e-8 for the three large entries
    np.testing.assert_allclose(p[1:], -0.1 * np.sign(g[1:]), rtol=max(1e-8, np.finfo(dtype).eps))


def test_updates_threads_bit_identical(rng, dtype):
    # one independent sweep over the elements: the same bits for any thread count
    n = 3 * _openmp.min_parallel_work()
    start = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    results = []
    for n_threads in (1, 2):
        p, vel = start.copy(), np.full(n, 0.3, dtype)
        K.sgd_update(p, g, vel, 0.1, 0.9, True, 0.01, 0.5, n_threads=n_threads)
        q, m, v = start.copy(), np.full(n, 0.1, dtype), np.full(n, 0.2, dtype)
        K.adam_update(q, g, m, v, 3, weight_decay=0.01, decoupled=True, n_threads=n_threads)
        results.append((p, vel, q, m, v))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ---- sum of squares (global-norm clipping) -----------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 63, 64, 65, 1000, 3 * 32768 + 5])
def test_sum_of_squares(rng, dtype, n):
    x = rng.standard_normal(n).astype(dtype)
    got = K.sum_of_squares(x)
    assert isinstance(got, float)
    # accumulated in double whatever the dtype: float64 rounding only
    np.testing.assert_allclose(got, R.sum_of_squares(x), rtol=1e-13)
    assert got == K.sum_of_squares(x, n_threads=1) == K.sum_of_squares(x, n_threads=2)


def test_sum_of_squares_accumulates_in_double():
    # 4096**2 = 2**24, where float32 stops counting: 2**24 + 1 rounds back to 2**24. In double
    # every one of the 127 ones counts (they share chunks with the big value: 128 elements make
    # 64 chunks of 2).
    x = np.array([4096.0] + [1.0] * 127, np.float32)
    assert K.sum_of_squares(x) == 2**24 + 127
    assert K.sum_of_squares(np.ones((3, 4), np.float32)) == 12.0  # any shape, read flat
    assert K.sum_of_squares(np.array([], np.float64)) == 0.0
