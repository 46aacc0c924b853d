"""The compiled engine (bpcore/_network.pyx) against the per-layer Python path and the NumPy
reference: same weights after training, same divergence reports, no allocation per step."""

import tracemalloc

import numpy as np
import pytest

import bp
import bpcore
from bp import _reference as R
from bp.sequential import TrainingDivergedError

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}

OPTIMIZERS = {
    "sgd": lambda: bp.SGD(0.1),
    "momentum": lambda: bp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: bp.Adam(1e-2, global_clipnorm=0.5),
    "adamw": lambda: bp.AdamW(1e-2, weight_decay=0.1),
}


def _model(dtype, acts=("tanh", "relu"), out="softmax", widths=(7, 5), n_out=3, seed=0):
    layers = [bp.Dense(u, activation=a) for u, a in zip(widths, acts)]
    layers.append(bp.Dense(n_out, activation=out))
    return bp.Sequential(layers, dtype=dtype, seed=seed)


def _passes_by(model, use_engine, X):
    """Build the model and choose its backward pass: the compiled engine or the Python twin."""
    model.build(X.shape[1])
    model._passes.compiled = use_engine
    return model


def _data(n=37, d=4, n_out=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, n_out, n), rng.uniform(0.2, 2.0, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("accumulate", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_engine_equals_python_loop(dtype, opt, accumulate, weighted):
    X, y, w = _data()
    results = []
    for use_engine in (True, False):
        model = _passes_by(_model(dtype), use_engine, X)
        h = model.fit(X, y, loss="cross_entropy", optimizer=OPTIMIZERS[opt](), epochs=3,
                      batch_size=5, accumulate=accumulate, sample_weight=w if weighted else None,
                      verbose=0)
        results.append((model.get_flat_params(), h.history, model.optimizer.iterations,
                        h.stopped_at))
    (p_e, h_e, it_e, at_e), (p_p, h_p, it_p, at_p) = results
    # the same kernels in the same order: the same bits
    np.testing.assert_array_equal(p_e, p_p)
    assert it_e == it_p and at_e == at_p
    np.testing.assert_allclose(h_e["loss"], h_p["loss"], rtol=1e-12)
    np.testing.assert_allclose(h_e["accuracy"], h_p["accuracy"], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss,out", [("mse", "sigmoid"), ("binary_cross_entropy", "sigmoid")])
def test_fit_engine_other_losses_unshuffled(dtype, loss, out):
    X, y, _ = _data(n_out=2)
    y = (y > 0).astype(float)
    params = []
    for use_engine in (True, False):
        model = _passes_by(_model(dtype, acts=("sigmoid", "leaky_relu"), out=out, n_out=1),
                           use_engine, X)
        model.fit(X, y, loss=loss, optimizer=bp.SGD(0.5, momentum=0.5), epochs=2, batch_size=8,
                  shuffle=False, verbose=0)
        params.append(model.get_flat_params())
    np.testing.assert_array_equal(params[0], params[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_engine_sgd_steps_match_reference(dtype):
    # Three full-batch SGD steps by the engine and by the plain NumPy reference, in float64.
    X, y, w = _data(n=16)
    model = _model(dtype, acts=("tanh", "sigmoid"))
    model.build(X.shape[1])
    Ws = [L.W.astype(np.float64) for L in model]
    bs = [L.b.astype(np.float64) for L in model]
    acts = [L.activation for L in model]
    Xd = X.astype(dtype).astype(np.float64)
    wd = w.astype(dtype).astype(np.float64)
    Y = np.eye(3)[y]
    model.fit(X, y, loss="cross_entropy", optimizer=bp.SGD(0.3), epochs=3, batch_size=16,
              shuffle=False, sample_weight=w, verbose=0)
    for _ in range(3):
        _, _, gW, gb = R.backward(Xd, Y, Ws, bs, acts, "cross_entropy", sample_weight=wd)
        for i in range(len(Ws)):
            R.sgd_update(Ws[i], gW[i], learning_rate=0.3)
            R.sgd_update(bs[i], gb[i], learning_rate=0.3)
    for L, W, b in zip(model, Ws, bs):
        np.testing.assert_allclose(L.W, W, **TOL[dtype])
        np.testing.assert_allclose(L.b, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_engine_backward_equals_layer_loop(dtype):
    X, y, w = _data(n=11)
    model = _model(dtype, acts=("gelu", "leaky_relu"))
    g_engine = model.gradients(X, y, loss="cross_entropy", sample_weight=w)
    model._passes.compiled = False
    g_layers = model.gradients(X, y, loss="cross_entropy", sample_weight=w)
    for (a, b), (c, d) in zip(g_engine, g_layers):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_divergence_reported_alike():
    X, y, _ = _data(n=40)
    X = X * 1e3
    reports = []
    for use_engine in (True, False):
        model = _passes_by(_model("float32", acts=("relu", "relu"), out="identity", n_out=1),
                           use_engine, X)
        with pytest.raises(TrainingDivergedError) as info:
            model.fit(X, y.astype(float) * 1e30, loss="mse", optimizer=bp.SGD(1e10), epochs=5,
                      batch_size=8, verbose=0)
        assert np.isfinite(model.get_flat_params()).all()  # the last finite weights
        assert model.history.stopped == "diverged"
        reports.append((str(info.value), model.history.stopped_at, model.get_flat_params()))
    assert reports[0][:2] == reports[1][:2]
    np.testing.assert_array_equal(reports[0][2], reports[1][2])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_steady_state_step_allocates_nothing(dtype):
    # A steady-state step (one compiled call) and an epoch of fit's compiled loop allocate no
    # array: tracemalloc sees at most a few small Python objects (the returned float).
    X, y, _ = _data(n=256, d=16)
    model = _model(dtype, widths=(32, 32))
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=1, batch_size=32, verbose=0)
    net = model._passes.engine()
    ws = model._passes.workspace(32)
    net.bind(ws)
    Xb = np.ascontiguousarray(X[:32], dtype=dtype)
    Yb = np.eye(3, dtype=dtype)[y[:32]]
    opt = model.optimizer._engine_spec()
    code = bpcore.LOSSES["cross_entropy"]
    for _ in range(50):
        net.train_step(Xb, Yb, None, code, 1 / 32, opt, 0.01, 0, 1)
    Xa = np.ascontiguousarray(X, dtype=dtype)
    Ya = np.eye(3, dtype=dtype)[y]
    order = np.random.default_rng(0).permutation(256)
    backup = np.empty_like(model._params)
    for _ in range(3):
        net.train_epoch(Xa, Ya, None, order, 32, 1, code, 1, opt, 0.01, 0, 1,
                        count_hits=True, guard=True, backup=backup)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(200):
            net.train_step(Xb, Yb, None, code, 1 / 32, opt, 0.01, 0, 1)
        for _ in range(20):
            net.train_epoch(Xa, Ya, None, order, 32, 1, code, 1, opt, 0.01, 0, 1,
                            count_hits=True, guard=True, backup=backup)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 4096, grown


def test_engine_rebuilt_when_buffers_change():
    X, y, _ = _data()
    model = _model("float64")
    model.fit(X, y, epochs=1, verbose=0)
    first = model._passes.engine()
    model._rebind(model.get_flat_params())
    assert model._passes.engine() is not first
    # the new engine trains the new buffers: the same step as the old model from the same state
    twin = _model("float64")
    twin.build(X.shape[1])
    twin.set_flat_params(model.get_flat_params())
    for m in (model, twin):
        m.fit(X, y, optimizer=bp.SGD(0.1), epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.get_flat_params(), twin.get_flat_params())
    assert not np.array_equal(model.get_flat_params(), first.params)


@pytest.mark.timeout(120)  # Ctrl-C alone ends this fit of 100000 epochs: fail, never hang
def test_ctrl_c_stops_the_compiled_loop_after_a_step():
    import _thread
    import threading

    rng = np.random.default_rng(3)
    X = rng.standard_normal((4000, 32))
    y = rng.integers(0, 3, 4000)
    model = _model("float32", widths=(64, 64))
    opt = bp.SGD(0.01)
    timer = threading.Timer(0.2, _thread.interrupt_main)

    class StartTimer(bp.Callback):  # epoch-level only: the compiled loop still runs
        def on_epoch_begin(self, epoch):
            if epoch == 0:
                timer.start()

    try:
        h = model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=100000, batch_size=16,
                      callbacks=[StartTimer()], verbose=0)
    finally:
        timer.cancel()
    assert h.stopped == "interrupted"
    at = h.stopped_at
    steps_per_epoch = 4000 // 16
    # every completed step was counted, and only those
    assert opt.iterations == at["epoch"] * steps_per_epoch + at["batch"] + 1
    assert np.isfinite(model.get_flat_params()).all()
