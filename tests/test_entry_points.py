"""gradients(), partial_fit and zero_grad/backward/step reuse their buffers (bench/api.py times
them) without changing what they return: independent results, the last pass's cached arrays
never rewritten under the reader, the same bits from concurrent calls as from serial ones."""

import threading

import numpy as np
import pytest

import bp


def _model(dtype="float64", compiled=True):
    model = bp.Sequential([bp.Dense(7, activation="tanh"), bp.Dense(3, activation="softmax")],
                          dtype=dtype, seed=3).build(5)
    model._passes.compiled = compiled
    return model


def _data(rows, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 5)), rng.integers(0, 3, rows)


@pytest.mark.parametrize("compiled", [True, False])
def test_gradients_results_are_independent_of_later_calls(compiled):
    model = _model(compiled=compiled)
    X1, y1 = _data(6, 1)
    X2, y2 = _data(6, 2)
    first = model.gradients(X1, y1)
    kept = [(gW.copy(), gb.copy()) for gW, gb in first]
    second = model.gradients(X2, y2)
    for (gW, gb), (kW, kb), (sW, _) in zip(first, kept, second):
        np.testing.assert_array_equal(gW, kW)  # the second call wrote elsewhere
        np.testing.assert_array_equal(gb, kb)
        assert not np.array_equal(gW, sW)


@pytest.mark.parametrize("compiled", [True, False])
def test_the_last_pass_workspace_is_never_handed_out_again(compiled):
    model = _model(compiled=compiled)
    for seed in range(4):
        X, y = _data(6, seed)
        model.gradients(X, y)
        passes = model._passes
        last_ws = passes.last[0]
        pooled = [ws for _, ws in passes._free]  # the private pool: (engine, workspace) pairs
        assert all(ws is not last_ws for ws in pooled)
        expected = [d.copy() for d in model.error_signals]
        model.gradients(*_data(6, seed + 10))  # a later pass must not write into last_ws
        for d, cached in zip(expected, last_ws.delta):
            np.testing.assert_array_equal(d, cached[:6])


def test_error_signals_follow_the_last_gradients_call():
    model = _model()
    X, y = _data(4, 5)
    model.gradients(*_data(4, 6))
    model.gradients(X, y)
    reference = _model()
    reference.zero_grad()
    reference.backward(X, y)
    for a, b in zip(model.error_signals, reference.error_signals):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_concurrent_gradients_give_the_serial_bits(dtype):
    model = _model(dtype)
    batches = [_data(rows, seed) for seed, rows in enumerate([3, 8, 8, 5, 8, 3])]
    serial = [model.gradients(X, y) for X, y in batches]
    results = [None] * len(batches)

    def work(i):
        for _ in range(20):
            results[i] = model.gradients(*batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        for (gW, gb), (wW, wb) in zip(got, want):
            np.testing.assert_array_equal(gW, wW)
            np.testing.assert_array_equal(gb, wb)


def test_gradients_fail_cleanly_and_the_pool_survives():
    model = _model()
    X, y = _data(4, 7)
    want = model.gradients(X, y)
    with pytest.raises(ValueError, match="same number of samples"):
        model.gradients(X, y[:3])
    for (gW, gb), (wW, wb) in zip(model.gradients(X, y), want):
        np.testing.assert_array_equal(gW, wW)
        np.testing.assert_array_equal(gb, wb)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_hold_blas_sets_the_pools_and_fit_gives_the_count_back():
    from bp import _threads

    with bp.num_threads(2):
        _threads.hold_blas(1)
        assert _blas_threads() == {1}
        _threads.hold_blas(2)
        assert _blas_threads() == {2}
        model = _model()
        model.partial_fit(*_data(8, 1), batch_size=8)  # a small step: held to 1, then back
        assert _blas_threads() == {2}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_explicit_loop_gives_the_same_bits_at_any_thread_count(optimizer):
    X, y = _data(8, 4)
    results = []
    for n in (1, 2):
        with bp.num_threads(n):
            model = _model()
            for i in range(3):
                model.zero_grad()
                model.backward(X, y)
                model.step(optimizer if i == 0 else None)
            results.append(model.get_flat_params())
    np.testing.assert_array_equal(results[0], results[1])
