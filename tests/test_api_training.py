"""Training through the model API: the issue's two end-to-end targets (XOR, digits), seeded
shuffling and validation, early stopping, callbacks, verbosity, History, partial_fit, gradient
accumulation, sample weights, and whole-network gradients against the NumPy reference and
central finite differences for every loss/output pair."""

import re

import numpy as np
import pytest
from sklearn import datasets, model_selection

import bp
from bp import _reference as R

TOL = {
    np.float32: dict(rtol=2e-5, atol=1e-6),
    np.float64: dict(rtol=1e-11, atol=1e-13),
}
DTYPES = [np.float32, np.float64]


def blobs(n=40, d=4, k=3, seed=0):
    """k Gaussian classes in d dimensions, learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centers = rng.standard_normal((k, d)) * 2
    return centers[y] + rng.standard_normal((n, d)), y


def mlp(dtype=np.float64, seed=0, out=3, out_act="softmax", hidden=(6,), act="tanh", **kw):
    layers = [bp.Dense(h, activation=act) for h in hidden] + [bp.Dense(out, activation=out_act)]
    return bp.Sequential(layers, dtype=dtype, seed=seed, **kw)


def flat_grads(grads):
    return np.concatenate([np.concatenate([gW.ravel()] + ([] if gb is None else [gb]))
                           for gW, gb in grads])


class Recorder(bp.Callback):
    """Every hook call, with the parameters at each epoch's end and each batch's loss."""

    def __init__(self):
        self.calls, self.params, self.logs, self.batch_losses = [], [], [], []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))
        self.batch_losses.append([])

    def on_batch_end(self, batch, logs=None):
        self.batch_losses[-1].append(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch))
        self.logs.append(dict(logs))
        self.params.append(self.model.get_flat_params())

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


# ---- the targets --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_xor_reaches_full_accuracy_from_a_fixed_seed(dtype):
    # the network and settings of `python -m bp xor`
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    y = np.array([0, 1, 1, 0], dtype=dtype)
    model = bp.Sequential([bp.Dense(2, activation="sigmoid"), bp.Dense(1, activation="sigmoid")],
                          dtype=dtype, seed=0)
    history = model.fit(X, y, loss="mse", optimizer=bp.SGD(learning_rate=2.0, momentum=0.9),
                        epochs=300, batch_size=4, shuffle=False, verbose=0)
    f_out = model.predict(X).ravel()
    np.testing.assert_array_equal(f_out >= 0.5, y == 1)
    assert history.history["loss"][-1] < 0.01
    assert model.evaluate(X, y, loss="binary_cross_entropy")["accuracy"] == 1.0


@pytest.fixture(scope="module")
def digits_split():
    X, y = datasets.load_digits(return_X_y=True)
    return model_selection.train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)


def test_the_digits_test_uses_the_cli_defaults():
    from bp.__main__ import parse_args

    args = parse_args([])
    assert (args.layers, args.epochs, args.batch_size, args.optimizer, args.learning_rate, args.seed) \
        == ([128, 64], 50, 32, "adam", None, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_digits_reach_97_percent_within_50_epochs(dtype, digits_split):
    # `python -m bp` exactly: 64-128-64-10 relu/softmax, Adam(1e-3), batch 32, 50 epochs,
    # 10% of the training quarter held out for validation; tested on the stratified quarter.
    X_train, X_test, y_train, y_test = digits_split
    model = bp.Sequential([bp.Dense(128, activation="relu"), bp.Dense(64, activation="relu"),
                           bp.Dense(10, activation="softmax")], dtype=dtype, seed=0)
    history = model.fit(X_train, y_train, loss="cross_entropy", optimizer=bp.Adam(1e-3), epochs=50,
                        batch_size=32, validation_split=0.1, verbose=0)
    assert len(history.epoch) == 50
    accuracy = model.evaluate(X_test, y_test)["accuracy"]
    assert accuracy >= 0.97, f"{dtype.__name__}: test accuracy {accuracy:.4f}"


# ---- shuffling and validation ---------------------------------------------------------------------


def _train(seed, **kw):
    X, y = blobs()
    model = mlp(seed=seed)
    kw.setdefault("epochs", 3)
    model.fit(X, y, batch_size=8, optimizer=bp.SGD(0.1, momentum=0.9), verbose=0, **kw)
    return model.get_flat_params()


def test_same_seed_gives_bit_identical_training():
    a = _train(3, validation_split=0.25)
    np.testing.assert_array_equal(a, _train(3, validation_split=0.25))
    assert not np.array_equal(a, _train(4, validation_split=0.25))
    assert not np.array_equal(_train(3), _train(3, shuffle=False))


def _batch_order(shuffle, seed=0, epochs=3):
    """The row each batch of one row came from, per epoch: with a learning rate of 1e-12 every
    batch's loss is its row's loss at the initial weights (distinct for random rows)."""
    X, y = blobs(n=12)
    model = mlp(seed=seed).build(4)
    rows = np.array([model.evaluate(X[i:i + 1], y[i:i + 1])["loss"] for i in range(12)])
    rec = Recorder()
    model.fit(X, y, epochs=epochs, batch_size=1, optimizer=bp.SGD(1e-12), shuffle=shuffle,
              verbose=0, callbacks=[rec])
    orders = []
    for losses in rec.batch_losses:
        gaps = np.abs(np.array(losses)[:, None] - rows[None, :])
        assert (gaps.min(axis=1) < 1e-9).all()
        orders.append(gaps.argmin(axis=1))
    return orders


def test_rows_are_reshuffled_every_epoch_from_the_seed():
    orders = _batch_order(shuffle=True)
    for order in orders:
        assert sorted(order) == list(range(12))  # every row once per epoch
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], np.arange(12))
    assert all(np.array_equal(a, b) for a, b in zip(orders, _batch_order(shuffle=True)))
    assert not all(np.array_equal(a, b) for a, b in zip(orders, _batch_order(shuffle=True, seed=1)))
    for order in _batch_order(shuffle=False):
        np.testing.assert_array_equal(order, np.arange(12))


def _held_out_rows(seed, validation_split=0.25, epochs=3, n=20):
    """Which rows validation_split held out. With one-hot rows X = I and a bias-free linear model,
    the gradient of W[j] is nonzero only if row j is trained on: held-out rows keep their weights."""
    X = np.eye(n)
    y = np.arange(n, dtype=np.float64) + 1
    model = bp.Sequential([bp.Dense(1, use_bias=False)], dtype="float64", seed=seed, input_dim=n).build()
    W0 = model[0].W.copy()
    history = model.fit(X, y, loss="mse", optimizer=bp.SGD(0.1), epochs=epochs, batch_size=4,
                        validation_split=validation_split, verbose=0)
    held = np.flatnonzero((model[0].W == W0).ravel())
    return held, model, history, X, y


def test_validation_split_is_drawn_after_a_seeded_shuffle():
    held, model, history, X, y = _held_out_rows(seed=0)
    assert len(held) == 5  # floor(20 * 0.25), the same rows in every epoch
    assert not np.array_equal(held, np.arange(15, 20)), "validation_split took the tail"
    # the reported validation loss is the loss on exactly those rows, after the last epoch
    np.testing.assert_allclose(history.history["val_loss"][-1], model.evaluate(X[held], y[held])["loss"],
                               rtol=1e-12)
    # seeded: the same seed holds out the same rows, another seed others
    np.testing.assert_array_equal(_held_out_rows(seed=0)[0], held)
    assert not np.array_equal(_held_out_rows(seed=1)[0], held)


def test_validation_data_is_evaluated_after_every_epoch():
    X, y = blobs(n=40)
    Xv, yv = blobs(n=15, seed=1)
    wv = np.linspace(0.5, 1.5, 15)
    checks = []

    class Check(bp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            checks.append((logs["val_loss"], logs["val_accuracy"],
                           self.model.evaluate(Xv, yv, sample_weight=wv)))

    model = mlp()
    history = model.fit(X, y, epochs=3, batch_size=8, validation_data=(Xv, yv, wv), verbose=0,
                        callbacks=[Check()])
    assert len(checks) == 3
    for val_loss, val_acc, ev in checks:
        assert val_loss == ev["loss"] and val_acc == ev["accuracy"]
    assert history.history["val_loss"] == [c[0] for c in checks]
    # validation rows are not trained on: the training loss covers all 40 training rows
    assert len(history.history["loss"]) == 3


# ---- early stopping -------------------------------------------------------------------------------


def _early_stopping_case(**es_kw):
    # Train y = 2x, validate on y = x, from w = 0: w climbs towards 2, so the validation loss
    # falls until w passes 1 and rises after; the best epoch is in the middle.
    X = np.linspace(-1, 1, 16).reshape(-1, 1)
    model = bp.Sequential([bp.Dense(1, use_bias=False, kernel_initializer="zeros")], dtype="float64")
    rec = Recorder()
    stop = bp.EarlyStopping(patience=3, **es_kw)
    history = model.fit(X, 2 * X, loss="mse", optimizer=bp.SGD(0.1), epochs=200, batch_size=16,
                        validation_data=(X, X), verbose=0, callbacks=[rec, stop])
    return model, history, rec, stop


def test_early_stopping_restores_the_best_weights():
    model, history, rec, stop = _early_stopping_case()
    val = history.history["val_loss"]
    best = int(np.argmin(val))
    assert 0 < best < len(val) - 1, "the case must improve, then get worse"
    assert history.stopped == "early_stopping"
    assert len(history.epoch) == best + 1 + 3  # patience 3 epochs without improvement
    assert stop.best_epoch == best and stop.best == val[best]
    np.testing.assert_array_equal(model.get_flat_params(), rec.params[best])
    assert not np.array_equal(rec.params[-1], rec.params[best])
    np.testing.assert_allclose(model.evaluate(*[np.linspace(-1, 1, 16).reshape(-1, 1)] * 2)["loss"],
                               val[best], rtol=1e-12)


def test_early_stopping_without_restoring_keeps_the_last_weights():
    model, history, rec, _ = _early_stopping_case(restore_best_weights=False)
    assert history.stopped == "early_stopping"
    np.testing.assert_array_equal(model.get_flat_params(), rec.params[-1])


def test_early_stopping_on_a_quantity_fit_does_not_report():
    X, y = blobs()
    model = mlp()
    with pytest.raises(ValueError, match=r"EarlyStopping monitors 'val_auc', which fit does not "
                                         r"report\. Available: loss, accuracy, learning_rate"):
        model.fit(X, y, epochs=2, verbose=0, callbacks=[bp.EarlyStopping(monitor="val_auc")])


@pytest.mark.parametrize("kw, match", [
    (dict(patience=-1), r"patience must be a non-negative integer\. Received: patience=-1"),
    (dict(patience=1.5), r"Received: patience=1\.5"),
    (dict(mode="up"), r"mode must be 'auto', 'min' or 'max'\. Received: mode='up'"),
    (dict(min_delta="a"), r"min_delta must be a real number"),
])
def test_early_stopping_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bp.EarlyStopping(**kw)


# ---- callbacks, verbosity, History ----------------------------------------------------------------


def test_callbacks_see_every_hook_with_logs():
    X, y = blobs(n=20)
    rec = Recorder()
    model = mlp()
    history = model.fit(X, y, epochs=2, batch_size=8, validation_split=0.2, verbose=0, callbacks=[rec])
    assert rec.model is model
    assert rec.calls == ["train_begin", ("epoch_begin", 0), ("epoch_end", 0),
                         ("epoch_begin", 1), ("epoch_end", 1), "train_end"]
    assert [len(b) for b in rec.batch_losses] == [2, 2]  # 16 training rows in batches of 8
    for epoch, logs in enumerate(rec.logs):
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
        assert all(logs[k] == history.history[k][epoch] for k in logs)


def test_a_callback_can_stop_training():
    class StopAfterTwo(bp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    X, y = blobs()
    history = mlp().fit(X, y, epochs=10, verbose=0, callbacks=[StopAfterTwo()])
    assert history.epoch == [0, 1] and history.stopped == "callback"


def test_verbose_0_is_silent(capsys):
    X, y = blobs()
    mlp().fit(X, y, epochs=3, validation_split=0.25, verbose=0)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_prints_one_line_per_epoch(verbose, capsys):
    # under pytest stdout is not a terminal, so verbose=1 prints lines too, with no progress bar
    X, y = blobs()
    history = mlp().fit(X, y, epochs=3, validation_split=0.25, verbose=verbose)
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines):
        m = re.fullmatch(rf"Epoch {epoch + 1}/3 - \d+\.\d\ds - \d+(?:us|ms|\.\d\ds)/step - "
                         r"loss: (\d+\.\d{4}) - accuracy: "
                         r"(\d\.\d{4}) - val_loss: (\d+\.\d{4}) - val_accuracy: (\d\.\d{4})", line)
        assert m, line
        for key, text in zip(["loss", "accuracy", "val_loss", "val_accuracy"], m.groups()):
            assert text == f"{history.history[key][epoch]:.4f}"


def test_history_contents():
    X, y = blobs(n=30)
    model = mlp()
    rec = Recorder()
    history = model.fit(X, y, epochs=4, batch_size=8, optimizer=bp.SGD(0.05), shuffle=False,
                        validation_split=0.2, verbose=0, callbacks=[rec])
    assert model.history is history
    assert history.epoch == [0, 1, 2, 3] and history.stopped is None
    assert len(history.epoch_times) == 4
    assert all(isinstance(t, float) and np.isfinite(t) and t >= 0 for t in history.epoch_times)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert all(len(v) == 4 for v in history.history.values())
    assert history["learning_rate"] == [0.05] * 4
    assert history["loss"] is history.history["loss"]
    assert repr(history) == ("History(epochs=4, keys=[loss, accuracy, val_loss, val_accuracy, "
                             "learning_rate], stopped=None)")
    # the epoch's loss is the mean over its rows of each batch's loss before that batch's update
    # (24 training rows: batches of 8, 8, 8)
    for epoch in range(4):
        np.testing.assert_allclose(history["loss"][epoch], np.mean(rec.batch_losses[epoch]), rtol=1e-12)


def test_history_loss_and_accuracy_are_before_each_update():
    # one full batch per epoch: the epoch's loss and accuracy are those of the weights it began with
    X, y = blobs(n=30)
    model = mlp()
    rec = Recorder()
    history = model.fit(X, y, epochs=3, batch_size=30, optimizer=bp.SGD(0.5), verbose=0, callbacks=[rec])
    probe = mlp()
    for epoch in range(3):
        if epoch == 0:
            probe.build(4)
        else:
            probe.set_flat_params(rec.params[epoch - 1])
        ev = probe.evaluate(X, y)
        np.testing.assert_allclose(history["loss"][epoch], ev["loss"], rtol=1e-12)
        assert history["accuracy"][epoch] == ev["accuracy"]


# ---- partial_fit ----------------------------------------------------------------------------------


def _optimizer_state(opt):
    return {k: np.array(v) for k, v in opt.state_dict().items()}


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("make_opt", [lambda: bp.Adam(0.01), lambda: bp.SGD(0.05, momentum=0.9),
                                      lambda: bp.SGD(bp.StepDecay(0.1, step_size=1, gamma=0.5))])
def test_partial_fit_keeps_the_optimizer_state(make_opt, shuffle):
    X, y = blobs()
    whole = mlp()
    whole.fit(X, y, epochs=2, batch_size=8, optimizer=make_opt(), shuffle=shuffle, verbose=0)
    parts = mlp()
    h1 = parts.partial_fit(X, y, batch_size=8, optimizer=make_opt(), shuffle=shuffle)
    h2 = parts.partial_fit(X, y, batch_size=8, shuffle=shuffle)  # the model's optimizer, continued
    np.testing.assert_array_equal(parts.get_flat_params(), whole.get_flat_params())
    a, b = _optimizer_state(parts.optimizer), _optimizer_state(whole.optimizer)
    assert a.keys() == b.keys() and a["iterations"] == b["iterations"] == 10
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # a schedule goes on from where the last pass left it
    assert h1["learning_rate"] + h2["learning_rate"] == whole.history["learning_rate"]


def test_a_new_optimizer_starts_afresh():
    X, y = blobs()
    kept, fresh = mlp(), mlp()
    for model in (kept, fresh):
        model.partial_fit(X, y, batch_size=8, optimizer=bp.Adam(0.01))
    kept.partial_fit(X, y, batch_size=8)
    fresh.partial_fit(X, y, batch_size=8, optimizer=bp.Adam(0.01))
    assert fresh.optimizer.iterations == 5 and kept.optimizer.iterations == 10
    assert not np.array_equal(kept.get_flat_params(), fresh.get_flat_params())


def test_compile_sets_the_defaults_for_fit():
    X, y = blobs()
    compiled, explicit = mlp(), mlp()
    opt = bp.SGD(0.1, momentum=0.5)
    assert compiled.compile(loss="cross_entropy", optimizer=opt) is compiled
    compiled.fit(X, y, epochs=2, verbose=0)
    explicit.fit(X, y, epochs=2, loss="cross_entropy", optimizer=bp.SGD(0.1, momentum=0.5), verbose=0)
    assert compiled.optimizer is opt and compiled.loss == "cross_entropy"
    np.testing.assert_array_equal(compiled.get_flat_params(), explicit.get_flat_params())


# ---- gradient accumulation ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_accumulate_equals_a_k_times_larger_batch(dtype, shuffle):
    # 45 rows: steps of 3 x 6 = 18, 18, then 9 (micro-batches of 6 and 3); the same in both
    X, y = blobs(n=45)
    w = np.linspace(0.2, 2, 45)
    runs = []
    for batch_size, accumulate in [(18, 1), (6, 3)]:
        model = mlp(dtype=dtype, hidden=(7, 5))
        h = model.fit(X, y, epochs=3, batch_size=batch_size, accumulate=accumulate, shuffle=shuffle,
                      sample_weight=w, optimizer=bp.SGD(0.1, momentum=0.9), verbose=0)
        runs.append((model.get_flat_params(), h))
    (p_big, h_big), (p_acc, h_acc) = runs
    # not bit-identical: the micro-batch gradients are summed in another order
    np.testing.assert_allclose(p_acc, p_big, **TOL[dtype])
    np.testing.assert_allclose(h_acc["loss"], h_big["loss"], **TOL[dtype])
    assert h_acc["accuracy"] == pytest.approx(h_big["accuracy"], abs=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss, out_act, target", [
    ("cross_entropy", "softmax", "labels"), ("mse", "tanh", "values"),
    ("binary_cross_entropy", "sigmoid", "bits"),
])
def test_zero_grad_backward_step_equals_one_big_step(dtype, loss, out_act, target):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((15, 4))
    y = {"labels": rng.integers(0, 3, 15), "values": rng.standard_normal((15, 3)),
         "bits": rng.integers(0, 2, (15, 3)).astype(float)}[target]
    w = rng.uniform(0, 2, 15)
    micro, big = mlp(dtype=dtype, out_act=out_act), mlp(dtype=dtype, out_act=out_act)
    opt_micro, opt_big = bp.SGD(0.1, momentum=0.9), bp.SGD(0.1, momentum=0.9)
    for _ in range(3):
        expected = flat_grads(big.gradients(X, y, loss=loss, sample_weight=w))
        micro.zero_grad()  # a no-op the first time, before backward builds the model
        total = 0.0
        for lo, hi in [(0, 5), (5, 12), (12, 15)]:  # unequal micro-batches
            total += micro.backward(X[lo:hi], y[lo:hi], loss=loss, sample_weight=w[lo:hi],
                                    total_samples=15)
        np.testing.assert_allclose(micro.get_flat_grads(), expected, **TOL[dtype])
        np.testing.assert_allclose(total, big.evaluate(X, y, loss=loss, sample_weight=w)["loss"],
                                   **TOL[dtype])
        micro.step(opt_micro)
        big.zero_grad()
        big.backward(X, y, loss=loss, sample_weight=w)
        np.testing.assert_allclose(big.get_flat_grads(), expected, **TOL[dtype])
        big.step(opt_big)
        np.testing.assert_allclose(micro.get_flat_params(), big.get_flat_params(), **TOL[dtype])


def test_backward_adds_to_the_gradient_buffer_until_zero_grad():
    X, y = blobs(n=10)
    model = mlp()
    model.backward(X, y)
    once = model.get_flat_grads().copy()
    model.backward(X, y)
    np.testing.assert_allclose(model.get_flat_grads(), 2 * once, rtol=1e-15)
    model.zero_grad()
    np.testing.assert_array_equal(model.get_flat_grads(), 0)


# ---- sample weights -------------------------------------------------------------------------------


@pytest.mark.parametrize("loss, out_act, target", [
    ("cross_entropy", "softmax", "labels"), ("mse", "identity", "values"),
    ("binary_cross_entropy", "sigmoid", "bits"),
])
def test_weight_two_is_a_duplicated_row(loss, out_act, target):
    # bp.losses: the weighted sum is divided by N, not by the sum of the weights. So with row 3
    # weighted 2, N * grad(weighted) == (N + 1) * grad(row 3 duplicated), and the same for the loss.
    rng = np.random.default_rng(1)
    N = 9
    X = rng.standard_normal((N, 4))
    y = {"labels": rng.integers(0, 3, N), "values": rng.standard_normal((N, 3)),
         "bits": rng.integers(0, 2, (N, 3)).astype(float)}[target]
    model = mlp(out_act=out_act)
    w = np.ones(N)
    w[3] = 2
    dup = np.r_[np.arange(N), 3]
    g_w = flat_grads(model.gradients(X, y, loss=loss, sample_weight=w))
    g_dup = flat_grads(model.gradients(X[dup], y[dup], loss=loss))
    np.testing.assert_allclose(N * g_w, (N + 1) * g_dup, rtol=1e-12, atol=1e-15)
    L_w = model.evaluate(X, y, loss=loss, sample_weight=w)["loss"]
    np.testing.assert_allclose(N * L_w, (N + 1) * model.evaluate(X[dup], y[dup], loss=loss)["loss"],
                               rtol=1e-12)
    # weights of one are no weights; a zero weight drops the row (rescaled from N - 1 to N)
    np.testing.assert_allclose(flat_grads(model.gradients(X, y, loss=loss, sample_weight=np.ones(N))),
                               flat_grads(model.gradients(X, y, loss=loss)), rtol=1e-15, atol=0)
    w0 = np.ones(N)
    w0[5] = 0
    keep = np.delete(np.arange(N), 5)
    np.testing.assert_allclose(N * flat_grads(model.gradients(X, y, loss=loss, sample_weight=w0)),
                               (N - 1) * flat_grads(model.gradients(X[keep], y[keep], loss=loss)),
                               rtol=1e-12, atol=1e-15)


def test_fit_with_sample_weight_takes_the_weighted_step():
    X, y = blobs(n=20)
    w = np.linspace(0, 3, 20)
    model, probe = mlp(), mlp()
    probe.build(4)
    expected = probe.get_flat_params() - 0.3 * flat_grads(probe.gradients(X, y, sample_weight=w))
    history = model.fit(X, y, epochs=1, batch_size=20, optimizer=bp.SGD(0.3), sample_weight=w, verbose=0)
    np.testing.assert_allclose(model.get_flat_params(), expected, rtol=1e-12, atol=1e-15)
    hit = probe.predict(X).argmax(axis=1) == y
    np.testing.assert_allclose(history["accuracy"][0], np.sum(w * hit) / np.sum(w), rtol=1e-12)


# ---- gradients: the reference and finite differences ----------------------------------------------

# Every loss with every output activation it accepts; the hidden layers cycle through the rest.
PAIRS = ([("mse", tau) for tau in bp.kernels.ACTIVATIONS]
         + [("binary_cross_entropy", "sigmoid"), ("cross_entropy", "softmax"),
            ("cross_entropy", "identity"), ("mae", "tanh"), ("huber", "identity"),
            ("poisson", "exponential")])
HIDDEN = {"identity": "gelu", "sigmoid": "leaky_relu", "tanh": "relu", "relu": "tanh",
          "leaky_relu": "sigmoid", "gelu": "identity", "softmax": "tanh", "elu": "silu",
          "selu": "mish", "silu": "softplus", "softplus": "hard_sigmoid", "mish": "elu",
          "hard_sigmoid": "selu", "exponential": "selu"}


KINKED = ("relu", "leaky_relu")  # sigma' jumps at 0


def _pair_case(loss, tau, soft_targets=False):
    # a fixed seed per case (its place in the list), so every run draws the same data
    rng = np.random.default_rng(1000 + PAIRS.index((loss, tau)) + (500 if soft_targets else 0))
    n, m = 7, 3
    X = rng.standard_normal((n, 4))
    if loss == "cross_entropy":
        y = rng.dirichlet(np.ones(m), n) if soft_targets else rng.integers(0, m, n)
    elif loss == "binary_cross_entropy":
        y = rng.uniform(0, 1, (n, m))
    elif loss == "poisson":
        y = rng.poisson(1.5, (n, m)).astype(float)
    else:
        y = rng.standard_normal((n, m))
    hidden = (HIDDEN[tau], "tanh")
    model = bp.Sequential([bp.Dense(5, activation=hidden[0], alpha=0.1), bp.Dense(4, activation=hidden[1]),
                           bp.Dense(m, activation=tau, alpha=0.1)], dtype="float64", seed=2)
    model.build(4)
    # move the biases off zero so that every term of the gradient is exercised
    model.set_flat_params(model.get_flat_params() + 0.1 * rng.standard_normal(model.n_params))
    w = rng.uniform(0.5, 2, n)
    return model, X, y, w


@pytest.mark.parametrize("loss, tau", PAIRS)
@pytest.mark.parametrize("weighted", [False, True])
def test_gradients_match_the_reference(loss, tau, weighted):
    model, X, y, w = _pair_case(loss, tau)
    w = w if weighted else None
    Y = np.eye(3)[y] if y.ndim == 1 else y
    grads = model.gradients(X, y, loss=loss, sample_weight=w)
    Ws = [L.W for L in model]
    bs = [L.b for L in model]
    L_ref, deltas, gW, gb = R.backward(X, Y, Ws, bs, [L.activation for L in model], loss, 0.1, w)
    for (kW, kb), rW, rb in zip(grads, gW, gb):
        np.testing.assert_allclose(kW, rW, **TOL[np.float64])
        np.testing.assert_allclose(kb, rb, **TOL[np.float64])
    for d, r in zip(model.error_signals, deltas):
        np.testing.assert_allclose(d, r, **TOL[np.float64])
    np.testing.assert_allclose(model.evaluate(X, y, loss=loss, sample_weight=w)["loss"], L_ref, rtol=1e-12)


def _kink_crossed(model, X, theta_a, theta_b):
    """True if some relu/leaky_relu input z_in changes sign between the two parameter vectors."""
    signs = []
    for theta in (theta_a, theta_b):
        model.set_flat_params(theta)
        z_ins, _ = R.forward(X, [L.W for L in model], [L.b for L in model],
                             [L.activation for L in model], 0.1)
        signs.append([np.signbit(z) | (z == 0) for z, L in zip(z_ins, model) if L.activation in KINKED])
    return any((a != b).any() for a, b in zip(*signs))


def test_float32_gradients_match_the_reference():
    # the cases above run in float64; a float32 model against the float64 reference on its
    # rounded inputs and weights
    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 4))
    y = rng.integers(0, 3, 9)
    model = bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(3, activation="softmax")],
                          dtype="float32", seed=0)
    grads = model.gradients(X, y, loss="cross_entropy")
    Ws = [L.W.astype(np.float64) for L in model]
    bs = [L.b.astype(np.float64) for L in model]
    _, _, gW, gb = R.backward(X.astype(np.float32).astype(np.float64), np.eye(3)[y], Ws, bs,
                              ["tanh", "softmax"], "cross_entropy")
    for (kW, kb), rW, rb in zip(grads, gW, gb):
        assert kW.dtype == kb.dtype == np.float32
        np.testing.assert_allclose(kW, rW, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(kb, rb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss, tau", PAIRS + [("cross_entropy-soft", "softmax")])
def test_gradients_match_central_finite_differences(loss, tau):
    soft = loss.endswith("-soft")
    loss = loss.replace("-soft", "")
    model, X, y, w = _pair_case(loss, tau, soft_targets=soft)
    analytic = flat_grads(model.gradients(X, y, loss=loss, sample_weight=w))
    theta = model.get_flat_params()
    h = 1e-6
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h
        # a difference that straddles relu's kink measures no derivative: the fixed data must
        # keep every relu/leaky_relu input on one side of 0 across theta +- h
        assert not _kink_crossed(model, X, theta + step, theta - step), f"parameter {i}"
        model.set_flat_params(theta + step)
        up = model.evaluate(X, y, loss=loss, sample_weight=w)["loss"]
        model.set_flat_params(theta - step)
        down = model.evaluate(X, y, loss=loss, sample_weight=w)["loss"]
        numeric[i] = (up - down) / (2 * h)
    model.set_flat_params(theta)
    # central differences with h = 1e-6 in float64: truncation ~h^2, rounding ~1e-16 / h = 1e-10
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert np.abs(analytic).max() > 1e-3  # not vacuous
