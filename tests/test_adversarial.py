"""An adversarial pass over the promises (issue 22): refused calls, their error type, the argument
their message names, and a model left exactly as it was (weights, optimizer state, History, the
seeded generator: tests/_reliability.py's snapshot, compared bit for bit).

Files (load, save, the zip bomb) are in tests/test_adversarial_files.py; ranks that disagree in
tests/test_adversarial_mpi.py.
"""

import copy
import gc
import os
import re
import signal
import threading
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bp
from bp import _passes

try:
    from . import _reliability as R
    from ._hypothesis_profiles import PROPERTY_SETTINGS
except ImportError:  # run as a plain directory of tests
    import _reliability as R
    from _hypothesis_profiles import PROPERTY_SETTINGS


def refused(model, call, error, pattern):
    """call(model) raises `error` matching `pattern`, and the model is exactly as it was."""
    before = R.snapshot(model)
    with pytest.raises(error, match=pattern):
        call(model)
    R.assert_unchanged(before, R.snapshot(model))


X, y = R.data()


# ---- a refused fit changes nothing ----------------------------------------------------------------
def test_a_schedule_refused_by_reduce_lr_on_plateau_leaves_the_optimizer_and_history():
    refused(R.classifier(), lambda m: m.fit(X, y, optimizer=bp.Adam(bp.StepDecay(0.01, 1)),
                                            callbacks=[bp.ReduceLROnPlateau()], verbose=0),
            TypeError, r"ReduceLROnPlateau needs an optimizer with a constant learning_rate")


@pytest.mark.parametrize("name", ["accumulate", "batch_size"])
def test_counts_beyond_the_compiled_range_are_value_errors_before_any_change(name):
    refused(R.classifier(), lambda m: m.fit(X, y, verbose=0, **{name: 2**70}), ValueError,
            rf"{name} must be a positive integer of at most 2147483647\. Received: {name}={2**70}")


@PROPERTY_SETTINGS
@given(name=st.sampled_from(["epochs", "batch_size", "accumulate"]),
       value=st.one_of(st.integers(max_value=0), st.integers(min_value=2**31, max_value=2**80),
                       st.floats(allow_nan=True), st.text(max_size=3), st.booleans()))
def test_any_bad_count_is_refused_naming_it(name, value):
    if name == "epochs" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return  # any positive epoch count is valid (the loop is Python's)
    error = ValueError if isinstance(value, int) and not isinstance(value, bool) else TypeError
    refused(R.classifier(), lambda m: m.fit(X, y, verbose=0, **{name: value}), error,
            rf"{name} must be a positive integer")


@pytest.mark.parametrize("make, pattern", [
    (lambda d: bp.ModelCheckpoint(d / "missing" / "m.npz"),
     r"ModelCheckpoint's filepath must be in an existing folder\. Received: .*missing"),
    (lambda d: bp.ModelCheckpoint(d),
     r"ModelCheckpoint's filepath must be a regular file .*which is a directory"),
    (lambda d: bp.ModelCheckpoint(d / "{bogus}.npz"),
     r"ModelCheckpoint cannot format the path .*\{bogus\}.*KeyError\('bogus'\)"),
    (lambda d: bp.ModelCheckpoint(d / "m.npz", monitor="bogus", save_best_only=True),
     r"ModelCheckpoint monitors 'bogus', which fit does not report"),
    (lambda d: bp.EarlyStopping(monitor="bogus"),
     r"EarlyStopping monitors 'bogus', which fit does not report\. Available: loss, accuracy"),
    (lambda d: bp.ReduceLROnPlateau(monitor="val_bogus"),
     r"ReduceLROnPlateau monitors 'val_bogus'"),
    (lambda d: bp.CSVLogger(d / "missing" / "log.csv"),
     r"CSVLogger's filename must be in an existing folder"),
    (lambda d: bp.CSVLogger(d),
     r"CSVLogger's filename must be a regular file .*which is a directory"),
], ids=["checkpoint-missing-folder", "checkpoint-directory", "checkpoint-key", "checkpoint-monitor",
        "early-stopping-monitor", "reduce-lr-monitor", "csv-missing-folder", "csv-directory"])
def test_callbacks_are_checked_before_the_first_step(tmp_path, make, pattern):
    # with a validation split: the split draws from the generator, which must not move either
    refused(R.classifier(), lambda m: m.fit(X, y, validation_split=0.3, epochs=2, verbose=0,
                                            callbacks=[make(tmp_path)]), ValueError, pattern)
    assert os.listdir(tmp_path) == []  # nothing written


def test_a_callback_may_refuse_a_fit_through_check_before_fit():
    class Picky(bp.Callback):
        def check_before_fit(self, model, optimizer, keys):
            raise ValueError(f"Picky wants val_loss. Received: keys={keys}")

    refused(R.classifier(), lambda m: m.fit(X, y, callbacks=[Picky()], verbose=0), ValueError,
            r"Picky wants val_loss\. Received: keys=\['loss', 'accuracy', 'learning_rate'\]")


def test_comm_that_is_not_a_communicator_is_a_type_error():
    pytest.importorskip("mpi4py")
    refused(R.classifier(), lambda m: m.fit(X, y, comm="x", verbose=0), TypeError,
            r"comm must be an mpi4py communicator .*Received: comm='x'")


@pytest.mark.parametrize("kwargs, name", [
    ({"sample_weight": np.zeros(len(X))}, "sample_weight"),
    ({"class_weight": {0: 0.0, 1: 0.0, 2: 0.0}}, "class_weight"),
    ({"sample_weight": np.r_[np.zeros(len(X) - 1), 1.0], "class_weight": {0: 0.0, 1: 0.0, 2: 0.0}},
     "class_weight"),
])
def test_all_zero_weights_are_refused(kwargs, name):
    # scikit-learn refuses too; bp's Adam would still move the weights on a loss of 0
    refused(R.classifier(), lambda m: m.fit(X, y, verbose=0, **kwargs), ValueError,
            rf"{name} gives every training sample the weight 0.*Received: all-zero {name}")
    refused(R.classifier(), lambda m: m.partial_fit(X, y, **kwargs), ValueError,
            r"gives every training sample the weight 0") if "class_weight" not in kwargs else None


def test_a_class_weight_too_large_for_float32_is_reported_as_its_value():
    refused(R.classifier(), lambda m: m.fit(X, y, class_weight={0: 1e40, 1: 1.0, 2: 1.0},
                                            verbose=0),
            ValueError, r"class_weight must fit in float32 \(largest 3\.403e\+38\)\. Received: 1e\+40")


def test_one_optimizer_trains_one_model():
    opt = bp.Adam(1e-2)
    first = R.classifier(trained=False)
    first.fit(X, y, optimizer=opt, verbose=0)
    second = R.classifier(seed=1)
    refused(second, lambda m: m.fit(X, y, optimizer=opt, verbose=0), ValueError,
            r"this optimizer already trains another model.*Received: optimizer=Adam")
    refused(second, lambda m: m.compile(optimizer=opt), ValueError, r"already trains another model")
    # a copy is free to train another model, and so is the optimizer once its model is gone
    second.fit(X, y, optimizer=copy.deepcopy(opt), verbose=0)
    del first
    gc.collect()  # (a model and its layers hold each other)
    R.classifier(seed=2).fit(X, y, optimizer=opt, verbose=0)


def test_a_sparse_X_is_named_as_such():
    sparse = pytest.importorskip("scipy.sparse")
    refused(R.classifier(), lambda m: m.fit(sparse.csr_matrix(X), y, verbose=0), TypeError,
            r"X must be a dense array; .*Received: a scipy\.sparse csr_matrix of shape \(10, 4\)")
    refused(R.classifier(), lambda m: m.predict(sparse.csr_matrix(X)), TypeError,
            r"X must be a dense array")


# ---- sizes ----------------------------------------------------------------------------------------
def test_a_build_that_can_never_fit_is_a_value_error_naming_the_bytes():
    model = bp.Sequential([bp.Dense(2)], seed=0)
    refused(model, lambda m: m.build(2**40), ValueError,
            r"a model of 2,199,023,255,554 parameters .* would need 17,592,186,044,432 bytes .*"
            r"this machine has [\d,]+ bytes of memory")
    assert not model.built and model.layers[0].input_dim is None
    model.build(3)  # and it still builds
    assert model.n_params == 8


def test_fit_checks_the_size_before_the_validation_split_draws():
    model = bp.Sequential([bp.Dense(2**40), bp.Dense(3, activation="softmax")], seed=0)
    refused(model, lambda m: m.fit(X, y, validation_split=0.2, verbose=0), ValueError,
            r"would need [\d,]+ bytes")


def test_seed_must_be_non_negative():
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer or None\. "
                                         r"Received: seed=-1"):
        bp.Sequential([bp.Dense(2)], seed=-1)
    with pytest.raises(TypeError, match=r"seed must be an int or None\. Received: seed=1\.5"):
        bp.Sequential([bp.Dense(2)], seed=1.5)


# ---- float32 overflow is reported as the value ----------------------------------------------------
def test_a_weight_too_large_for_float32_is_reported_as_its_value():
    model = R.classifier()
    W = np.zeros(model.layers[0].W.shape)
    W[1, 2] = 1e39
    refused(model, lambda m: setattr(m.layers[0], "W", W), ValueError,
            r"W must fit in float32 .*Received: 1e\+39 at row, column \(1, 2\)")


def test_an_initialiser_returning_1e39_is_reported_as_its_value():
    model = bp.Sequential([bp.Dense(3, kernel_initializer=lambda shape, rng: np.full(shape, 1e39))],
                          seed=0)
    refused(model, lambda m: m.build(4), ValueError,
            r"initial W \(from kernel_initializer\) must fit in float32 .*Received: 1e\+39")
    assert not model.built


@pytest.mark.parametrize("where", ["X", "X_val"])
def test_1e300_in_a_memory_mapped_float64_array_is_reported_as_its_value(tmp_path, where):
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(10, 4))
    big[...] = X
    big[7, 3] = 1e300
    big.flush()
    big = np.load(path, mmap_mode="r")
    call = ((lambda m: m.fit(big, y, verbose=0)) if where == "X" else
            (lambda m: m.fit(X, y, validation_data=(big, y), verbose=0)))
    refused(R.classifier(), call, ValueError,
            rf"{where} must fit in float32 \(largest 3\.403e\+38\)\. Received: 1e\+300 at row, "
            rf"column \(7, 3\)")


# ---- workspaces are bounded -----------------------------------------------------------------------
def test_workspaces_are_kept_for_a_few_batch_sizes_only():
    model = R.classifier()
    Xs, ys = R.data(40)
    for rows in range(1, 41):
        model.backward(Xs[:rows], ys[:rows])
        model.gradients(Xs[:rows], ys[:rows])
        model.partial_fit(Xs[:rows], ys[:rows], batch_size=rows)
    passes = model._passes
    assert len(passes._workspaces) <= _passes.WORKSPACE_CACHE
    assert len(passes._free) <= _passes.WORKSPACE_CACHE
    # the cache gives the same numbers as a fresh model (nothing stale is reused)
    fresh = R.classifier()
    fresh.set_flat_params(model.get_flat_params())
    assert fresh.backward(Xs[:7], ys[:7]) == model.backward(Xs[:7], ys[:7])


# ---- threads: a fit from its own callback, a predict during another thread's fit ------------------
def test_a_fit_started_from_a_callback_of_the_same_model_says_so():
    inner = []

    def refit(epoch, logs):
        with pytest.raises(RuntimeError, match=r"called while this model is being fitted in this "
                                               r"same thread \(from a callback\?\)"):
            model.fit(X, y, verbose=0)
        inner.append(epoch)

    model = R.classifier()
    model.fit(X, y, epochs=2, verbose=0, callbacks=[bp.LambdaCallback(on_epoch_end=refit)])
    assert inner == [0, 1]


def test_predict_from_another_thread_during_a_fit_is_refused():
    model = R.classifier()
    started, release, seen = threading.Event(), threading.Event(), []

    def hold(epoch, logs):
        model.predict(X)  # the fitting thread itself may predict
        started.set()
        release.wait(30)

    fitting = threading.Thread(target=model.fit, args=(X, y), kwargs={
        "epochs": 1, "verbose": 0, "callbacks": [bp.LambdaCallback(on_epoch_end=hold)]})
    fitting.start()
    try:
        assert started.wait(30)
        for call in (lambda: model.predict(X), lambda: model.evaluate(X, y)):
            with pytest.raises(RuntimeError, match=r"this model is being fitted in another thread"):
                call()
            seen.append(True)
    finally:
        release.set()
        fitting.join(30)
    assert seen == [True, True]
    assert model.predict(X).shape == (10, 3)  # after the fit, as before


# ---- EarlyStopping after a divergence or Ctrl-C: the last completed step --------------------------
def _interrupted_fit(with_early_stopping):
    model = R.classifier(trained=False)

    def interrupt(epoch, logs):
        if epoch == 3:
            os.kill(os.getpid(), signal.SIGINT)

    callbacks = [bp.LambdaCallback(on_epoch_end=interrupt)]
    if with_early_stopping:
        callbacks.insert(0, bp.EarlyStopping(monitor="loss", patience=100, mode="max"))
    history = model.fit(X, y, epochs=6, batch_size=4, verbose=0, callbacks=callbacks)
    return model, history, callbacks[0]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="SIGINT reaches the main thread only")
def test_early_stopping_after_ctrl_c_leaves_the_last_completed_step():
    plain, h_plain, _ = _interrupted_fit(False)
    model, history, stopper = _interrupted_fit(True)
    assert history.stopped == h_plain.stopped == "interrupted"
    # mode="max" on the loss: the best epoch is the first, whose weights differ from the last
    assert stopper.best_epoch == 0
    assert not np.array_equal(stopper.best_params, model.get_flat_params())
    assert R.params_equal(model, plain)
    for name, buf in plain.optimizer._state.items():
        assert buf.tobytes() == model.optimizer._state[name].tobytes()
    assert model.optimizer.iterations == plain.optimizer.iterations


def test_early_stopping_after_a_divergence_leaves_the_last_completed_step():
    def diverging(early_stopping):
        model = R.regressor(trained=False)
        Xd = np.tile(X, (4, 1))
        yd = Xd[:, :2] * 2.0
        callbacks = [bp.EarlyStopping(monitor="loss", patience=100, mode="max")] if early_stopping else []
        history = model.fit(Xd, yd, loss="mse", optimizer=bp.SGD(0.3, momentum=0.99), epochs=200,
                            batch_size=4, verbose=0, on_nan="stop", callbacks=callbacks)
        return model, history

    plain, h_plain = diverging(False)
    model, history = diverging(True)
    assert history.stopped == h_plain.stopped == "diverged"
    assert R.params_equal(model, plain)
    assert np.isfinite(model.get_flat_params()).all()
    for name, buf in plain.optimizer._state.items():
        assert buf.tobytes() == model.optimizer._state[name].tobytes()


# ---- threads setting, pandas, sklearn -------------------------------------------------------------
def test_more_threads_than_cpus_warns():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before = bp.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match=rf"asks for more threads than the {cpus} CPUs"):
            bp.set_num_threads(cpus + 1)
    finally:
        bp.set_num_threads(None)
    assert bp.get_num_threads() == before or os.environ.get("OMP_NUM_THREADS")


def test_pandas_nullable_columns_are_read_and_their_NA_located():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=list("abcd")).astype("Float64")
    plain, nullable = R.classifier(), R.classifier()
    plain.fit(X, y, epochs=2, verbose=0)
    nullable.fit(frame, y, epochs=2, verbose=0)
    assert R.params_equal(plain, nullable)
    frame.iloc[4, 2] = pd.NA
    refused(R.classifier(), lambda m: m.fit(frame, y, verbose=0), ValueError,
            r"X must contain only finite values\. Received: nan at row, column \(4, 2\)")


def test_a_dataframe_with_reordered_columns_is_refused():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=list("abcd"))
    model = R.classifier(trained=False)
    model.fit(frame, y, verbose=0)
    expected = model.predict(frame)
    refused(model, lambda m: m.predict(frame[list("badc")]), ValueError,
            r"X's columns must be the ones the model was fitted on, in that order: \['a', 'b', "
            r"'c', 'd'\]\. Received: \['b', 'a', 'd', 'c'\]")
    refused(model, lambda m: m.fit(frame[list("badc")], y, verbose=0), ValueError,
            r"X's columns must be")
    assert np.array_equal(model.predict(frame[list("abcd")]), expected)
    assert np.array_equal(model.predict(X), expected)  # a plain array is taken by position


def test_sklearn_partial_fit_keeps_float64_and_adam_when_a_float32_batch_follows():
    from sklearn.neural_network import MLPClassifier

    from bp.sklearn import MLPClassifier as BpMLPClassifier

    ours = BpMLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    theirs = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    for est in (ours, theirs):
        est.partial_fit(X, y, classes=[0, 1, 2])
    moments = ours._optimizer.state1.copy()
    for est in (ours, theirs):
        est.partial_fit(X.astype(np.float32), y)
    assert ours.coefs_[0].dtype == theirs.coefs_[0].dtype == np.float64
    assert ours.t_ == theirs.t_ == 2 * len(X)
    assert ours._optimizer.state1.dtype == np.float64
    assert not np.array_equal(ours._optimizer.state1, moments)  # went on, not restarted
    np.testing.assert_allclose(ours.coefs_[0], theirs.coefs_[0], rtol=1e-6, atol=1e-9)


# ---- the CLI: usage errors before any training ----------------------------------------------------
@pytest.mark.parametrize("argv, pattern", [
    (["--seed", "-1"], r"argument --seed: expected a non-negative integer, received '-1'"),
    (["--layers", "5,,3"], r"argument --layers: expected comma-separated positive integers"),
    (["--layers", "100000000000"], r"argument --layers: a model of [\d,]+ parameters .* would need"),
    (["xor", "--seed", "-2"], r"argument --seed: expected a non-negative integer"),
    (["explain", "--layers", "100000000000"], r"argument --layers: a model of"),
])
def test_cli_usage_errors(argv, pattern, capsys):
    from bp.__main__ import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)


@pytest.mark.parametrize("option", ["--output", "--plot"])
def test_cli_output_into_a_missing_folder_is_a_usage_error_before_training(tmp_path, option, capsys):
    from bp.__main__ import main

    with mock.patch("bp.__main__.digits", side_effect=AssertionError("trained")):
        with pytest.raises(SystemExit) as exc:
            main([option, str(tmp_path / "missing" / "out")])
    assert exc.value.code == 2
    assert re.search(rf"argument {option}: {option} must be in an existing folder",
                     capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main([option, str(tmp_path)])  # a directory
    assert "which is a directory" in capsys.readouterr().err


def test_a_schedule_failing_at_a_later_epoch_is_refused_before_the_first_step():
    def schedule(epoch):
        return 0.01 if epoch < 3 else -1.0

    refused(R.classifier(), lambda m: m.fit(X, y, optimizer=bp.Adam(schedule), epochs=5, verbose=0),
            ValueError, r"learning_rate \(from the schedule\) must be a finite number in \(0\.0, inf\)\. "
                        r"Received: learning_rate \(from the schedule\)=-1\.0")


def test_a_layer_width_mismatch_is_found_before_the_validation_split_draws():
    model = bp.Sequential([bp.Dense(5), bp.Dense(3, activation="softmax", input_dim=6)], seed=0)
    refused(model, lambda m: m.fit(X, y, validation_split=0.2, verbose=0), ValueError,
            r"layer 1 .* expects input_dim=6 but receives 5 features")
