"""Metrics (bp/metrics.py, bpcore/_metrics.pyx): the compiled state updates against their NumPy
twins, the exact values against sklearn.metrics, the running values of fit against a replay of
its batches, and where fit, evaluate, History and the monitors show them."""

import math
import re

import numpy as np
import pytest
from sklearn import metrics as skm

import bp
from bp import _reference as ref
from bp import metrics as M
from bpcore import _metrics as K

from .conftest import tol


def scores(rng, n, m, dtype, softmax):
    z = rng.standard_normal((n, m))
    if softmax:
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    else:
        p = 1 / (1 + np.exp(-z))
    return np.ascontiguousarray(p, dtype)


def labels_of(rng, n, m, dtype):
    Y = np.zeros((n, m), dtype)
    Y[np.arange(n), rng.integers(0, m, n)] = 1
    return Y


# ---- the compiled updates equal their twins ------------------------------------------------------

UPDATES = ["confusion_update", "top_k_update", "error_update", "auc_update"]


@pytest.mark.parametrize("name", UPDATES)
def test_the_twins_have_the_compiled_signatures(name):
    import inspect

    assert [(p.name, p.kind) for p in inspect.signature(getattr(K, name)).parameters.values()] \
        == [(p.name, p.kind) for p in inspect.signature(getattr(ref, name)).parameters.values()]



@pytest.mark.parametrize("weighted", [False, True])
def test_compiled_updates_equal_the_numpy_twins(dtype, rng, weighted):
    n, m = 57, 4
    f_out = scores(rng, n, m, dtype, softmax=True)
    f_out[3, 1] = f_out[3, 2]  # a tie: the first maximum wins in both
    f_out[5] = [-0.1, 1.2, 0.0, 1.0]  # scores outside [0, 1] go to the end bins
    Y = labels_of(rng, n, m, dtype)
    Yb = (rng.random((n, m)) > 0.5).astype(dtype)
    w = rng.random(n).astype(dtype) * 2.5 if weighted else np.ones(1, dtype)
    w_ref = w if weighted else None
    def start(*shape):  # states add to what is there
        return np.full(shape, 0.5)
    for binary, target, shape in ((False, Y, (m, m)), (True, Yb, (2, 2))):
        C, C_ref = start(*shape), start(*shape)
        K.confusion_update(f_out, target, w, weighted, binary, 0.3, C)
        ref.confusion_update(f_out, target, w_ref, weighted, binary, 0.3, C_ref)
        np.testing.assert_allclose(C, C_ref, **tol(np.float64, n))
    for k in (1, 2, 4):
        h, h_ref = start(2), start(2)
        K.top_k_update(f_out, Y, w, weighted, k, h)
        ref.top_k_update(f_out, Y, w_ref, weighted, k, h_ref)
        np.testing.assert_allclose(h, h_ref, **tol(np.float64, n))
    S, S_ref = start(5, m), start(5, m)
    K.error_update(f_out, Yb, w, weighted, S)
    ref.error_update(f_out, Yb, w_ref, weighted, S_ref)
    np.testing.assert_allclose(S, S_ref, **tol(np.float64, n))
    for ovr, target in ((True, Y), (False, Yb)):
        H, H_ref = start(m, 2, 7), start(m, 2, 7)
        K.auc_update(f_out, target, w, weighted, ovr, H)
        ref.auc_update(f_out, target, w_ref, weighted, ovr, H_ref)
        np.testing.assert_allclose(H, H_ref, **tol(np.float64, n))


# ---- exact values equal sklearn.metrics ----------------------------------------------------------


def bound(metric, loss, m):
    return M.get(metric).bind(loss, m)


@pytest.mark.parametrize("weighted", [False, True])
def test_classification_metrics_equal_sklearn(rng, weighted):
    n, m = 300, 7
    p = scores(rng, n, m, np.float64, softmax=True)
    Y = labels_of(rng, n, m, np.float64)
    w = rng.random(n) * 3 if weighted else None
    y, pred = Y.argmax(1), p.argmax(1)
    sk = {"accuracy": skm.accuracy_score(y, pred, sample_weight=w),
          "f1": skm.f1_score(y, pred, average="macro", sample_weight=w),
          "f1_macro": skm.f1_score(y, pred, average="macro", sample_weight=w),
          "f1_micro": skm.f1_score(y, pred, average="micro", sample_weight=w),
          "precision": skm.precision_score(y, pred, average="macro", sample_weight=w),
          "recall": skm.recall_score(y, pred, average="macro", sample_weight=w),
          "top_k_categorical_accuracy": skm.top_k_accuracy_score(y, p, k=5, sample_weight=w,
                                                                 labels=range(m)),
          "auc": skm.roc_auc_score(y, p, multi_class="ovr", sample_weight=w)}
    for name, expected in sk.items():
        got = bound(name, "cross_entropy", m).exact(Y, p, w)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12), name
    top2 = M.TopKCategoricalAccuracy(2).bind("cross_entropy", m).exact(Y, p, w)
    assert top2 == pytest.approx(skm.top_k_accuracy_score(y, p, k=2, sample_weight=w), abs=1e-12)


def test_a_class_never_true_nor_predicted_is_left_out_of_the_macro_mean(rng):
    # scikit-learn averages over the labels that occur in y or the prediction
    p = scores(rng, 40, 4, np.float64, softmax=True)
    p[:, 3] = 0.0
    Y = labels_of(rng, 40, 3, np.float64)
    Y = np.hstack([Y, np.zeros((40, 1))])
    expected = skm.f1_score(Y.argmax(1), p.argmax(1), average="macro")
    assert bound("f1", "cross_entropy", 4).exact(Y, p) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_binary_metrics_equal_sklearn(rng, weighted):
    n = 400
    p = scores(rng, n, 1, np.float64, softmax=False)
    p[:40] = p[40:80]  # ties in the scores: AUC counts them one half, as sklearn
    Y = (rng.random((n, 1)) < p).astype(np.float64)
    w = rng.random(n) * 3 if weighted else None
    y, pred = Y[:, 0], (p[:, 0] >= 0.5).astype(int)
    sk = {"accuracy": skm.accuracy_score(y, pred, sample_weight=w),
          "binary_accuracy": skm.accuracy_score(y, pred, sample_weight=w),
          "precision": skm.precision_score(y, pred, sample_weight=w),
          "recall": skm.recall_score(y, pred, sample_weight=w),
          "f1": skm.f1_score(y, pred, sample_weight=w),
          "f1_micro": skm.f1_score(y, pred, average="micro", sample_weight=w),
          "auc": skm.roc_auc_score(y, p[:, 0], sample_weight=w)}
    for name, expected in sk.items():
        got = bound(name, "binary_cross_entropy", 1).exact(Y, p, w)
        # AUC to 1e-9 in float64 (the bound); the others are ratios of the same sums
        assert got == pytest.approx(expected, rel=1e-9 if name == "auc" else 1e-12), name


def test_a_two_class_softmax_is_one_binary_auc(rng):
    p = scores(rng, 200, 2, np.float64, softmax=True)
    Y = labels_of(rng, 200, 2, np.float64)
    expected = skm.roc_auc_score(Y.argmax(1), p[:, 1])
    assert bound("auc", "cross_entropy", 2).exact(Y, p) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_regression_metrics_equal_sklearn(rng, m, weighted):
    n = 250
    Y = rng.standard_normal((n, m)) * 3 + 10  # far from 0: the exact R2 is two-pass
    f = Y + rng.standard_normal((n, m))
    w = rng.random(n) * 2 if weighted else None
    sk = {"mae": skm.mean_absolute_error(Y, f, sample_weight=w),
          "mse": skm.mean_squared_error(Y, f, sample_weight=w),
          "rmse": skm.root_mean_squared_error(Y, f, sample_weight=w),
          "r2": skm.r2_score(Y, f, sample_weight=w)}
    for name, expected in sk.items():
        metric = bound(name, "mse", m)
        assert metric.exact(Y, f, w) == pytest.approx(expected, rel=1e-12), name
        # the running state over batches of 32 gives the same values (to rounding)
        for start in range(0, n, 32):
            metric.update_state(Y[start:start + 32], f[start:start + 32],
                                None if w is None else w[start:start + 32])
        assert metric.result() == pytest.approx(expected, rel=1e-9), name


def test_r2_of_a_constant_target_follows_sklearn():
    Y = np.full((5, 1), 2.0)
    for f in (Y.copy(), Y + 1):
        assert bound("r2", "mse", 1).exact(Y, f) == skm.r2_score(Y, f)


def test_the_running_auc_is_the_histogram_area(rng):
    # scores in one bin count as ties: with the scores on the bins' centres the running AUC is
    # exact; with n_bins=200 it is within a few thousandths of it on random scores
    n = 500
    centres = (rng.integers(0, 20, (n, 1)) + 0.5) / 20
    Y = (rng.random((n, 1)) < centres).astype(np.float64)
    metric = M.AUC(n_bins=20).bind("binary_cross_entropy", 1)
    metric.update_state(Y, centres)
    assert metric.result() == pytest.approx(skm.roc_auc_score(Y[:, 0], centres[:, 0]), rel=1e-12)
    p = scores(rng, n, 1, np.float64, softmax=False)
    metric = M.AUC().bind("binary_cross_entropy", 1)
    metric.update_state(Y, p)
    assert abs(metric.result() - skm.roc_auc_score(Y[:, 0], p[:, 0])) < 5e-3


# ---- in fit, evaluate and History ----------------------------------------------------------------


def digits_like(rng, n=240, classes=3):
    X = rng.standard_normal((n, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5) if classes == 3 else (
        X[:, 0] + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return X, y


def net(out, activation, dtype="float64"):
    return bp.Sequential([bp.Dense(8, activation="tanh"), bp.Dense(out, activation=activation)],
                         seed=3, dtype=dtype)


def test_validation_metrics_equal_sklearn_on_the_predictions(rng):
    X, y = digits_like(rng)
    model = net(3, "softmax")
    h = model.fit(X[:180], y[:180], epochs=2, batch_size=16, verbose=0,
                  validation_data=(X[180:], y[180:]), metrics=["auc", "f1", "precision"])
    p = model.predict(X[180:])
    assert h["val_auc"][-1] == pytest.approx(
        skm.roc_auc_score(y[180:], p, multi_class="ovr"), rel=1e-9)
    assert h["val_f1"][-1] == pytest.approx(
        skm.f1_score(y[180:], p.argmax(1), average="macro"), rel=1e-12)
    ev = model.evaluate(X[180:], y[180:], metrics=["auc", "f1", "precision"])
    assert {k: ev[k] for k in ("auc", "f1", "precision")} == {
        k: h["val_" + k][-1] for k in ("auc", "f1", "precision")}


@pytest.mark.parametrize("accumulate", [1, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_training_metrics_are_running_values_before_each_update(rng, accumulate, shuffle):
    # replay fit's batches: each batch's f_out with the weights it began with, into one state
    X, y = digits_like(rng, n=100, classes=2)
    model, replay = net(1, "sigmoid"), net(1, "sigmoid")
    replay.build(6)
    h = model.fit(X, y, epochs=1, batch_size=8, accumulate=accumulate, shuffle=shuffle,
                  optimizer=bp.SGD(0.5), verbose=0, metrics=["auc", "mae", "precision"])
    # the same seed, the same draws: the replay's generator after building is fit's when it shuffles
    rows = replay._rng.permutation(100) if shuffle else np.arange(100)
    states = [M.get(name).bind("binary_cross_entropy", 1) for name in ("auc", "mae", "precision")]
    opt = bp.SGD(0.5)
    for start in range(0, 100, 8 * accumulate):
        replay.zero_grad()
        step = rows[start:start + 8 * accumulate]
        for k in range(0, len(step), 8):
            idx = step[k:k + 8]
            f = replay.predict(X[idx])
            for s in states:
                s.update_state(y[idx].reshape(-1, 1).astype(np.float64), f)
            replay.backward(X[idx], y[idx], total_samples=len(step))
        replay.step(opt)
    for s in states:
        assert h[s.name][0] == pytest.approx(s.result(), rel=1e-9), s.name


def test_the_python_and_compiled_steps_give_the_same_metrics(rng):
    class Plain(bp.SGD):  # a user's subclass: the Python steps run it
        pass

    X, y = digits_like(rng)
    runs = [net(3, "softmax").fit(X, y, epochs=2, batch_size=16, optimizer=opt, verbose=0,
                                  metrics=["auc", "top_k_categorical_accuracy", "f1"])
            for opt in (bp.SGD(0.1), Plain(0.1))]
    for key in ("auc", "top_k_categorical_accuracy", "f1", "loss"):
        np.testing.assert_allclose(runs[0][key], runs[1][key], rtol=1e-12, err_msg=key)


def test_compiled_metrics_reach_fit_evaluate_and_partial_fit(rng):
    X, y = digits_like(rng)
    model = net(3, "softmax").compile(metrics=["auc", bp.metrics.F1Score("micro", name="f1u")])
    h = model.fit(X, y, epochs=1, verbose=0, validation_split=0.25)
    assert {"auc", "f1u", "val_auc", "val_f1u"} <= set(h.history)
    assert {"auc", "f1u"} <= set(model.evaluate(X, y))
    assert {"auc", "f1u"} <= set(model.partial_fit(X, y).history)
    # fit's own metrics= replaces compile's for that fit
    assert "auc" not in model.fit(X, y, epochs=1, verbose=0, metrics=["mae"]).history


def test_a_regressor_logs_its_errors(rng):
    X = rng.standard_normal((120, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 3
    model = bp.Sequential([bp.Dense(8, activation="relu"), bp.Dense(1)], seed=0, dtype="float64")
    h = model.fit(X, y, epochs=3, verbose=0, validation_split=0.25,
                  metrics=["mae", "rmse", "r2", "mean_squared_error"])
    names = {"mae", "rmse", "r2", "mse"}
    assert names | {"val_" + k for k in names} <= set(h.history)
    assert h["val_rmse"][-1] == pytest.approx(math.sqrt(h["val_mse"][-1]), rel=1e-12)


def test_monitors_take_the_metric_s_mode(rng, tmp_path):
    X, y = digits_like(rng)
    model = net(3, "softmax")
    stop = bp.EarlyStopping(monitor="val_auc", patience=50)
    best = bp.ModelCheckpoint(tmp_path / "m-{epoch}.npz", monitor="val_auc", save_best_only=True)
    plateau = bp.ReduceLROnPlateau(monitor="val_mae", patience=0, factor=0.5, min_delta=0.0)
    h = model.fit(X, y, epochs=6, verbose=0, validation_split=0.25, metrics=["auc", "mae"],
                  callbacks=[stop, best, plateau], optimizer=bp.SGD(0.2))
    values = h["val_auc"]
    assert stop.best == max(values) and stop.best_epoch == int(np.argmax(values))
    # a checkpoint at each new maximum of val_auc, from epoch 1 (Keras counts from 1)
    records = [e for e in range(6) if values[e] > max(values[:e], default=-1)]
    assert best.saved == [str(tmp_path / f"m-{e + 1}.npz") for e in records]
    # the rate halves after each epoch whose val_mae is not below the best so far ("min")
    mae, rate = h["val_mae"], 0.2
    for e in range(5):
        if mae[e] >= min(mae[:e], default=np.inf):
            rate *= 0.5
        assert h["learning_rate"][e + 1] == pytest.approx(rate), e
    assert h.best("val_auc") == (int(np.argmax(values)), max(values))
    assert h.best_epoch == int(np.argmin(h["val_loss"])) and h.best_value == min(h["val_loss"])
    assert h.best("val_auc", mode="min") == (int(np.argmin(values)), min(values))


def test_a_callback_s_logs_are_kept_by_history_the_line_and_csvlogger(rng, tmp_path, capsys):
    X, y = digits_like(rng)
    path = tmp_path / "log.csv"

    def add(epoch, logs):
        logs["val_custom"] = 0.25 + epoch

    # the logger first in the list: it still sees what the later callback adds
    h = net(3, "softmax").fit(X, y, epochs=2, verbose=2, validation_split=0.25,
                              callbacks=[bp.CSVLogger(path), bp.LambdaCallback(on_epoch_end=add)])
    assert h["val_custom"] == [0.25, 1.25]
    out = capsys.readouterr().out
    assert re.search(r"Epoch 2/2 .* - val_custom: 1\.2500", out)
    header, *rows = path.read_text().splitlines()
    assert header.split(",")[-1] == "val_custom" and rows[1].split(",")[-1] == "1.25"


# ---- bad input -----------------------------------------------------------------------------------


def test_an_unknown_metric_lists_the_valid_ones(rng):
    X, y = digits_like(rng)
    model = net(3, "softmax")
    with pytest.raises(ValueError, match=r"unknown metric; expected one of: accuracy, .*auc.*"
                                         r"Received: 'acuracy'"):
        model.fit(X, y, verbose=0, metrics=["acuracy"])
    with pytest.raises(ValueError, match=r"Received: 'roc'"):
        model.compile(metrics="roc")
    with pytest.raises(TypeError, match=r"Received: 3"):
        model.fit(X, y, verbose=0, metrics=[3])
    assert not model.built and model._metrics == []


def test_a_class_metric_on_a_regressor_is_refused_before_anything_changes(rng):
    X = rng.standard_normal((50, 3))
    model = bp.Sequential([bp.Dense(1)], seed=0)
    for name in ("accuracy", "auc", "f1"):
        with pytest.raises(ValueError, match=rf"the metric '{name}' needs class targets .*"
                                             r"Received: loss='mse'"):
            model.fit(X, X[:, 0], verbose=0, metrics=[name])
    assert not model.built and model.optimizer is None


def test_auc_with_one_class_in_the_validation_data_is_refused_before_anything_changes(rng):
    X, y = digits_like(rng, classes=2)
    model = net(1, "sigmoid")
    state = model._rng.bit_generator.state
    with pytest.raises(ValueError, match=r"the metric 'auc' needs both positive and negative "
                                         r"rows for output 0 in the validation data\. "
                                         r"Received: only negative rows"):
        model.fit(X, y, verbose=0, metrics=["auc"], validation_data=(X[:5], np.zeros(5)))
    model3 = net(3, "softmax")
    X3, y3 = digits_like(rng)
    with pytest.raises(ValueError, match=r"for class 1 one-vs-rest in the validation data\. "
                                         r"Received: only negative rows"):
        model3.fit(X3, y3, verbose=0, metrics=["auc"],
                   validation_data=(X3[:4], np.array([0, 2, 0, 2])))
    assert not model.built and not model3.built and model._rng.bit_generator.state == state
    with pytest.raises(ValueError, match=r"in the y\. Received: only positive rows"):
        net(1, "sigmoid").evaluate(X[:3], np.ones(3), metrics=["auc"])


def test_bad_metric_arguments():
    with pytest.raises(ValueError, match=r"Received: average='weighted'"):
        bp.metrics.F1Score("weighted")
    with pytest.raises(ValueError, match=r"k must be a positive integer\. Received: k=0"):
        bp.metrics.TopKCategoricalAccuracy(0)
    with pytest.raises(ValueError, match=r"average='binary' needs two classes.*Received: 3"):
        bp.metrics.Precision("binary").bind("cross_entropy", 3)
    with pytest.raises(ValueError, match=r"needs a softmax output.*Received: "
                                         r"loss='binary_cross_entropy'"):
        bp.metrics.TopKCategoricalAccuracy().bind("binary_cross_entropy", 1)
    with pytest.raises(ValueError, match=r"must be unique.*Received: metrics=\['mae', 'mae'\]"):
        bp.metrics.check(["mae", "mean_absolute_error"])
    metric = bp.metrics.get("mae").bind("mse", 2)
    with pytest.raises(ValueError, match=r"Received: y_true \(4, 3\), y_pred \(4, 3\), "
                                         r"sample_weight None"):
        metric.update_state(np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"bind the metric .* Received: an unbound "
                                         r"AUC\(n_bins=200, name='auc'\)"):
        bp.metrics.AUC().update_state(np.zeros((4, 1)), np.zeros((4, 1)))


def test_metrics_with_batches_and_a_memory_mapped_validation_set(rng, tmp_path):
    # an iterable of batches trains as the arrays do; validation read in blocks gives the exact
    # metrics over all its rows
    X, y = digits_like(rng)
    path = tmp_path / "X_val.npy"
    np.save(path, X[180:])
    X_val = np.load(path, mmap_mode="r")
    arrays, batches = net(3, "softmax"), net(3, "softmax")
    h = arrays.fit(X[:180], y[:180], epochs=2, batch_size=20, shuffle=False, verbose=0,
                   metrics=["auc", "f1"], validation_data=(X_val, y[180:]))
    class Loader:  # restarts at each epoch, as a DataLoader
        def __iter__(self):
            return ((X[s:s + 20], y[s:s + 20]) for s in range(0, 180, 20))

    hb = batches.fit(Loader(), epochs=2, verbose=0, metrics=["auc", "f1"],
                     validation_data=(X[180:], y[180:]))
    for key in ("auc", "f1", "val_auc", "val_f1"):
        np.testing.assert_allclose(hb[key], h[key], rtol=1e-12, err_msg=key)
    p = arrays.predict(X[180:])
    assert h["val_auc"][-1] == pytest.approx(skm.roc_auc_score(y[180:], p, multi_class="ovr"),
                                             rel=1e-9)


def test_history_plot_draws_a_panel_per_metric(rng):
    pytest.importorskip("matplotlib")
    X, y = digits_like(rng)
    h = net(3, "softmax").fit(X, y, epochs=2, verbose=0, validation_split=0.25,
                              metrics=["auc", "f1"])
    fig = h.plot()
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "auc", "f1",
                                                   "learning rate"]
    auc = fig.axes[2]
    assert [list(line.get_ydata()) for line in auc.get_lines()] == [h["auc"], h["val_auc"]]


@pytest.mark.parametrize("accumulate", [1, 3])
@pytest.mark.parametrize("make_opt", [lambda: bp.SGD(0.1, momentum=0.9), lambda: bp.Adam(0.01)])
def test_metrics_leave_the_training_bit_for_bit(rng, accumulate, make_opt):
    # asking for metrics changes how the epoch is run (a step at a time, or the Python steps),
    # never what it computes
    X, y = digits_like(rng)
    quiet, measured = net(3, "softmax", "float32"), net(3, "softmax", "float32")
    hq = quiet.fit(X, y, epochs=2, batch_size=16, accumulate=accumulate, optimizer=make_opt(),
                   verbose=0)
    hm = measured.fit(X, y, epochs=2, batch_size=16, accumulate=accumulate, optimizer=make_opt(),
                      verbose=0, metrics=["auc", "mae"])
    assert measured.get_flat_params().tobytes() == quiet.get_flat_params().tobytes()
    assert hm["loss"] == hq["loss"] and hm["accuracy"] == hq["accuracy"]
