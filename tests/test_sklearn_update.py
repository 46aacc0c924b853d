"""bpcore._param_update.sklearn_update (bp.sklearn's fused step) against scikit-learn's own
SGDOptimizer and AdamOptimizer over several steps, with the L2 term on the weight segments only
and the sum of squares of the weights it returns."""

import numpy as np
import pytest
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

import bpcore
from bpcore import _param_update

from .conftest import DTYPES, assert_close

STEPS = 4


def _segments(sizes, rng, dtype):
    """A flat buffer cut into weight/bias segments of the given sizes, and its bounds."""
    bounds = np.cumsum([0] + list(sizes)).astype(np.intp)
    return rng.standard_normal(bounds[-1]).astype(dtype), bounds


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver,nesterov", [("sgd", True), ("sgd", False), ("adam", False)])
@pytest.mark.parametrize("sizes,n_threads", [((12, 3, 6, 2), 1), ((150_000, 300, 30_000, 7), 2)])
def test_sklearn_update_matches_sklearn_optimizers(dtype, solver, nesterov, sizes, n_threads):
    rng = np.random.default_rng(3)
    flat, bounds = _segments(sizes, rng, dtype)
    segments = [flat[lo:hi].copy() for lo, hi in zip(bounds[:-1], bounds[1:])]
    lr, momentum, l2 = 0.05, 0.8, 0.3
    if solver == "sgd":
        oracle = SGDOptimizer(segments, lr, "constant", momentum, nesterov)
        state1, state2 = np.zeros_like(flat), None
    else:
        oracle = AdamOptimizer(segments, lr, 0.85, 0.99, 1e-7)
        state1, state2 = np.zeros_like(flat), np.zeros_like(flat)
    for t in range(1, STEPS + 1):
        grad = rng.standard_normal(flat.size).astype(dtype)
        expected_sumsq = sum(float(np.dot(s.astype(np.float64), s)) for s in segments[::2])
        # scikit-learn's gradient of a weight carries the penalty, a bias's does not
        oracle_grads = [grad[lo:hi] + (l2 * s if j % 2 == 0 else 0) for j, (s, lo, hi) in
                        enumerate(zip(segments, bounds[:-1], bounds[1:]))]
        oracle.update_params(segments, oracle_grads)
        step_lr = lr if solver == "sgd" else lr * np.sqrt(1 - 0.99 ** t) / (1 - 0.85 ** t)
        sumsq = _param_update.sklearn_update(grad, bounds, solver, l2, step_lr, momentum,
                                             nesterov, 0.85, 0.99, 1e-7, flat, state1, state2,
                                             n_threads)
        np.testing.assert_allclose(sumsq, expected_sumsq,
                                   rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(flat, np.concatenate(segments), dtype, err_msg=f"{solver} after {STEPS} steps")


def test_sklearn_update_thread_count_does_not_change_the_result():
    results = []
    for n_threads in (1, 2):
        flat, bounds = _segments((200_000, 50, 100_000, 3), np.random.default_rng(1), np.float64)
        m, v = np.zeros_like(flat), np.zeros_like(flat)
        grad = np.random.default_rng(2).standard_normal(flat.size)
        s = _param_update.sklearn_update(grad, bounds, "adam", 0.1, 0.01, 0.9, False, 0.9,
                                         0.999, 1e-8, flat, m, v, n_threads)
        results.append((flat, s))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-14)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_engine_epoch_with_sklearn_kinds_guarded_or_not_is_the_same(solver):
    # bp.sklearn runs the engine unguarded; the guard's careful path (copy, update, scan) must
    # give the same parameters, optimizer state and loss for scikit-learn's kinds too
    from bp import _sklearn_net
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((50, 4)), np.eye(3)[rng.integers(0, 3, 50)]
    coefs = [rng.standard_normal((4, 5)), rng.standard_normal((5, 3))]
    intercepts = [rng.standard_normal(5), rng.standard_normal(3)]
    results = []
    for guard in (False, True):
        net = _sklearn_net.Network(coefs, intercepts, "tanh", "softmax", np.float64)
        opt = _sklearn_net.Optimizer(solver, net.passes.params.size, np.float64, 0.01)
        engine = net.passes.engine()
        engine.bind(net.passes.workspace(16))
        spec = opt.engine_spec(0.3, net)
        order = rng.permutation(50).astype(np.int64) if not results else results[0][3]
        engine.train_epoch(X, Y, None, order, 16, 1, bpcore.LOSSES["cross_entropy"], 1, spec,
                           0.01, 0, 1, guard=guard,
                           backup=np.empty_like(net.passes.params))
        results.append((net.passes.params.copy(), opt.state1.copy(), engine.total, order))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]
