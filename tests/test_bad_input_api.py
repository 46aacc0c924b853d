"""Every public entry point x every bad input: the error type, a message that names what was
expected and what was received (matched by regex, as PyTorch's error tests do), and a model left
exactly as it was (weights, optimizer state, history, seeded generator).

Unusual but valid inputs (lists, pandas-like objects, Fortran-ordered, strided, read-only and
memory-mapped arrays, integers, a batch larger than the data) must give the same answer, to the
bit, as the plain C-ordered float array.

The tables are data; the tests at the bottom run them. To add a bad input, add a row.
"""

import numpy as np
import pytest

import bp

try:  # tests/ as a package (it has an __init__.py) or as a plain directory on sys.path
    from ._reliability import (N_CLASSES, N_FEATURES, N_SAMPLES, assert_unchanged, binary, classifier,
                               data, params_equal, regressor, snapshot)
except ImportError:
    from _reliability import (N_CLASSES, N_FEATURES, N_SAMPLES, assert_unchanged, binary, classifier,
                              data, params_equal, regressor, snapshot)

X0, y0 = data()
N = N_SAMPLES


def _with(a, index, value):
    a = np.array(a, dtype=float)
    a[index] = value
    return a


# ---- bad X: (id, X, exception, message regex) -------------------------------------------------
BAD_X = [
    ("nan", _with(X0, (2, 1), np.nan), ValueError,
     r"X must contain only finite values\. Received: nan at row, column \(2, 1\)"),
    ("inf", _with(X0, (3, 0), -np.inf), ValueError,
     r"X must contain only finite values\. Received: -inf at row, column \(3, 0\)"),
    ("overflows_float32", _with(X0, (1, 2), -1e300), ValueError,
     r"X must fit in float32 \(largest 3\.403e\+38\)\. Received: -1e\+300 at row, column \(1, 2\)"),
    ("wrong_features", np.zeros((N, N_FEATURES + 1)), ValueError,
     rf"X must have {N_FEATURES} features \(the model's input width\)\. "
     rf"Received: X with shape \({N}, {N_FEATURES + 1}\)"),
    ("no_rows", np.zeros((0, N_FEATURES)), ValueError,
     rf"X is empty: expected at least one sample\. Received: shape \(0, {N_FEATURES}\)"),
    ("no_columns", np.zeros((N, 0)), ValueError, rf"X has no features\. Received: shape \({N}, 0\)"),
    ("empty_list", [], ValueError, r"X must be 2-D\. Received: X with shape \(0,\)"),
    ("1d", X0[0], ValueError, rf"X must be 2-D\. Received: X with shape \({N_FEATURES},\)"),
    ("3d", X0[:, :, None], ValueError,
     rf"X must be 2-D\. Received: X with shape \({N}, {N_FEATURES}, 1\)"),
    ("scalar", 1.5, ValueError, r"X must be 2-D\. Received: X with shape \(\)"),
    ("none", None, TypeError, r"X must be an array of real numbers .* Received: X with dtype object"),
    ("object", X0.astype(object), TypeError,
     r"X must be an array of real numbers \(float32 or float64; integers are cast\)\. "
     r"Received: X with dtype object"),
    ("strings", X0.astype(str), TypeError, r"X must be an array of real numbers .* Received: X with dtype <U"),
    ("complex", X0 + 1j, TypeError, r"X must be an array of real numbers .* Received: X with dtype complex128"),
    ("bool", X0 > 0, TypeError, r"X must be an array of real numbers .* Received: X with dtype bool"),
    ("ragged", [[1.0, 2.0, 3.0, 4.0], [1.0]], TypeError, r"X could not be read as an array"),
]

# ---- bad y for the cross-entropy classifier (3 classes) ---------------------------------------
BAD_Y = [
    ("length", y0[:-1], ValueError,
     rf"X and y must have the same number of samples\. Received: {N} samples in X and {N - 1} in y"),
    ("label_too_large", _with(y0, 4, 3).astype(int), ValueError,
     r"cross_entropy labels must be integers in \[0, 3\) for a model with 3 outputs\. "
     r"Received: 3 at index 4"),
    ("label_negative", _with(y0, 5, -1).astype(int), ValueError,
     r"cross_entropy labels must be integers in \[0, 3\) .* Received: -1 at index 5"),
    ("label_not_integer", _with(y0, 6, 1.5), ValueError,
     r"cross_entropy labels must be integers in \[0, 3\)\. Received: 1\.5 at index 6"),
    ("label_nan", _with(y0, 2, np.nan), ValueError,
     r"y must contain only finite values\. Received: nan at index 2"),
    ("label_strings", y0.astype(str), TypeError,
     r"cross_entropy labels must be integers in \[0, 3\)\. Received: y with dtype <U"),
    ("label_bool", y0 > 0, TypeError,
     r"cross_entropy labels must be integers in \[0, 3\)\. Received: y with dtype bool"),
    ("label_complex", y0 + 0j, TypeError,
     r"cross_entropy labels must be integers .* Received: y with dtype complex128"),
    ("wrong_width", np.eye(2)[y0 % 2], ValueError,
     rf"y must have 3 column\(s\), one per output of the model\. Received: y with shape \({N}, 2\)"),
    ("onehot_inf", _with(np.eye(3)[y0], (2, 1), np.inf), ValueError,
     r"y must contain only finite values\. Received: inf at row, column \(2, 1\)"),
    ("onehot_negative", _with(np.eye(3)[y0], (3, 2), -0.5), ValueError,
     r"cross_entropy target rows must be non-negative .* Received: -0\.5 at row 3, column 2"),
    ("soft_targets_not_summing_to_one", _with(np.eye(3)[y0], 1, [0.2, 0.3, 0.4]), ValueError,
     r"cross_entropy target rows must sum to 1 \(one-hot or probabilities\)\. Received: a row "
     r"summing to 0\.9 at row 1 of y"),
    ("3d", np.eye(3)[y0][:, :, None], ValueError,
     rf"y must be 1-D or 2-D\. Received: y with shape \({N}, 3, 1\)"),
    ("scalar", 1, ValueError, r"y must be 1-D or 2-D\. Received: y with shape \(\)"),
]

# ---- bad y for the other losses: (id, model factory, y, exception, regex) --------------------
BAD_Y_OTHER = [
    ("mse_nan", regressor, _with(X0[:, :2], (4, 1), np.nan), ValueError,
     r"y must contain only finite values\. Received: nan at row, column \(4, 1\)"),
    ("mse_wrong_width", regressor, X0[:, :3], ValueError,
     rf"y must have 2 column\(s\), one per output of the model\. Received: y with shape \({N}, 3\)"),
    ("mse_1d_for_2_outputs", regressor, X0[:, 0], ValueError,
     rf"y must have 2 column\(s\).* Received: y with shape \({N},\)"),
    ("mse_strings", regressor, X0[:, :2].astype(str), TypeError,
     r"y must be an array of real numbers .* Received: y with dtype <U"),
    ("mse_bool", regressor, X0[:, :2] > 0, TypeError,
     r"y must be an array of real numbers .* Received: y with dtype bool"),
    ("bce_above_1", binary, _with((X0[:, :2] > 0), (1, 0), 2.0), ValueError,
     r"binary_cross_entropy targets must lie in \[0, 1\]\. Received: 2\.0 at row 1, column 0"),
    ("bce_negative", binary, _with((X0[:, :2] > 0), (7, 1), -1.0), ValueError,
     r"binary_cross_entropy targets must lie in \[0, 1\]\. Received: -1\.0 at row 7, column 1"),
]

# ---- bad sample_weight --------------------------------------------------------------------------
BAD_W = [
    ("nan", _with(np.ones(N), 3, np.nan), ValueError,
     r"sample_weight must contain only finite values\. Received: nan at index \(3\)"),
    ("inf", _with(np.ones(N), 0, np.inf), ValueError,
     r"sample_weight must contain only finite values\. Received: inf at index \(0\)"),
    ("negative", _with(np.ones(N), 2, -1.0), ValueError,
     r"sample_weight must be non-negative\. Received: -1\.0 at index 2"),
    ("length", np.ones(N - 1), ValueError,
     rf"sample_weight must have one entry per sample \({N}\)\. Received: shape \({N - 1},\)"),
    ("2d", np.ones((N, 1)), ValueError,
     rf"sample_weight must be 1-D\. Received: sample_weight with shape \({N}, 1\)"),
    ("strings", np.ones(N).astype(str), TypeError,
     r"sample_weight must be an array of real numbers .* Received: sample_weight with dtype <U"),
]

# The data entry points: name -> call(model, X, y, sample_weight). predict takes X only.
DATA_ENTRY = {
    "fit": lambda m, X, y, w: m.fit(X, y, sample_weight=w, epochs=2, verbose=0),
    "partial_fit": lambda m, X, y, w: m.partial_fit(X, y, sample_weight=w),
    "evaluate": lambda m, X, y, w: m.evaluate(X, y, sample_weight=w),
    "gradients": lambda m, X, y, w: m.gradients(X, y, sample_weight=w),
    "backward": lambda m, X, y, w: m.backward(X, y, sample_weight=w),
}
X_ENTRY = {**DATA_ENTRY, "predict": lambda m, X, y, w: m.predict(X)}


# A lazy model takes its input width from the first X, so a different width is no error there.
WIDTH_CASES = ("wrong_features",)


def _cases():
    for state in ("trained", "unbuilt"):
        for entry in X_ENTRY:
            for case_id, X, exc, regex in BAD_X:
                if state == "unbuilt" and case_id in WIDTH_CASES:
                    continue
                yield pytest.param(classifier, state, entry, X, y0, None, exc, regex,
                                   id=f"{state}-{entry}-X-{case_id}")
        for entry in DATA_ENTRY:
            for case_id, y, exc, regex in BAD_Y:
                yield pytest.param(classifier, state, entry, X0, y, None, exc, regex,
                                   id=f"{state}-{entry}-y-{case_id}")
            for case_id, factory, y, exc, regex in BAD_Y_OTHER:
                yield pytest.param(factory, state, entry, X0, y, None, exc, regex,
                                   id=f"{state}-{entry}-y-{case_id}")
            for case_id, w, exc, regex in BAD_W:
                yield pytest.param(classifier, state, entry, X0, y0, w, exc, regex,
                                   id=f"{state}-{entry}-sample_weight-{case_id}")


@pytest.mark.parametrize("factory, state, entry, X, y, w, exc, regex", list(_cases()))
def test_bad_data_is_rejected_and_changes_nothing(factory, state, entry, X, y, w, exc, regex):
    """On a trained model nothing changes; an unbuilt one stays unbuilt, its seeded generator
    untouched (building draws from it), so training it later is training a fresh model."""
    model = factory(trained=state == "trained")
    before = snapshot(model)
    with pytest.raises(exc, match=regex):
        X_ENTRY[entry](model, X, y, w)
    assert_unchanged(before, snapshot(model))


def _schedule_nan(epoch):
    return float("nan")


# ---- bad arguments of the model's methods: (id, call(model), exception, regex) --------------
# ---- bad arguments of the model's methods: (id, call(model), exception, regex) --------------
# Each runs on a trained model (nothing may change) and on an unbuilt one (it must stay unbuilt).
BAD_ARGS = [
    ("fit-batch_size-0", lambda m: m.fit(X0, y0, batch_size=0, verbose=0), ValueError,
     r"batch_size must be a positive integer\. Received: batch_size=0"),
    ("fit-batch_size-negative", lambda m: m.fit(X0, y0, batch_size=-4, verbose=0), ValueError,
     r"batch_size must be a positive integer\. Received: batch_size=-4"),
    ("fit-batch_size-float", lambda m: m.fit(X0, y0, batch_size=2.5, verbose=0), TypeError,
     r"batch_size must be a positive integer\. Received: batch_size=2\.5"),
    ("fit-batch_size-bool", lambda m: m.fit(X0, y0, batch_size=True, verbose=0), TypeError,
     r"batch_size must be a positive integer\. Received: batch_size=True"),
    ("fit-epochs-0", lambda m: m.fit(X0, y0, epochs=0, verbose=0), ValueError,
     r"epochs must be a positive integer\. Received: epochs=0"),
    ("fit-epochs-negative", lambda m: m.fit(X0, y0, epochs=-1, verbose=0), ValueError,
     r"epochs must be a positive integer\. Received: epochs=-1"),
    ("fit-epochs-str", lambda m: m.fit(X0, y0, epochs="5", verbose=0), TypeError,
     r"epochs must be a positive integer\. Received: epochs='5'"),
    ("fit-epochs-float", lambda m: m.fit(X0, y0, epochs=1.5, verbose=0), TypeError,
     r"epochs must be a positive integer\. Received: epochs=1\.5"),
    ("fit-accumulate-0", lambda m: m.fit(X0, y0, accumulate=0, verbose=0), ValueError,
     r"accumulate must be a positive integer\. Received: accumulate=0"),
    ("fit-loss-unknown", lambda m: m.fit(X0, y0, loss="mae", verbose=0), ValueError,
     r"Unknown loss 'mae'\. Valid values: 'mse', 'binary_cross_entropy', 'cross_entropy'"),
    ("fit-loss-type", lambda m: m.fit(X0, y0, loss=3, verbose=0), TypeError,
     r"loss must be a string, one of mse, binary_cross_entropy, cross_entropy\. Received: 3"),
    ("fit-loss-output-mismatch", lambda m: m.fit(X0, y0, loss="bce", verbose=0), ValueError,
     r"loss 'binary_cross_entropy' needs an output activation in \('sigmoid'\)\. "
     r"Received: output activation 'softmax'"),
    ("fit-optimizer-unknown", lambda m: m.fit(X0, y0, optimizer="rmsprop", verbose=0), ValueError,
     r"Unknown optimizer 'rmsprop'\. Valid values: 'sgd', 'adam', 'adamw' or a bp\.Optimizer"),
    ("fit-optimizer-type", lambda m: m.fit(X0, y0, optimizer=0.1, verbose=0), TypeError,
     r"optimizer must be a bp\.Optimizer or one of sgd, adam, adamw\. Received: float"),
    ("fit-schedule-nan", lambda m: m.fit(X0, y0, optimizer=bp.SGD(_schedule_nan), verbose=0),
     ValueError, r"learning_rate \(from the schedule\) must be a finite number in \(0\.0, inf\)\. "
     r"Received: .*=nan"),
    ("fit-validation_split-1", lambda m: m.fit(X0, y0, validation_split=1.0, verbose=0), ValueError,
     r"validation_split must be a finite number in \[0\.0, 1\.0\)\. Received: validation_split=1\.0"),
    ("fit-validation_split-negative", lambda m: m.fit(X0, y0, validation_split=-0.1, verbose=0),
     ValueError, r"validation_split must be a finite number in \[0\.0, 1\.0\)\. "
     r"Received: validation_split=-0\.1"),
    ("fit-validation_split-nan", lambda m: m.fit(X0, y0, validation_split=float("nan"), verbose=0),
     ValueError, r"validation_split must be a finite number in \[0\.0, 1\.0\)\. Received: validation_split=nan"),
    ("fit-validation_split-too-small", lambda m: m.fit(X0, y0, validation_split=0.05, verbose=0),
     ValueError, r"validation_split=0\.05 leaves 0 validation and 10 training samples; both need at least one"),
    ("fit-validation_data-X-nan", lambda m: m.fit(X0, y0, validation_data=(_with(X0, (0, 0), np.nan), y0), verbose=0),
     ValueError, r"X_val must contain only finite values\. Received: nan at row, column \(0, 0\)"),
    ("fit-validation_data-y-range", lambda m: m.fit(X0, y0, validation_data=(X0, y0 + 3), verbose=0),
     ValueError, r"cross_entropy labels must be integers in \[0, 3\) .* Received: 3 at index 0"),
    ("fit-validation_data-weights", lambda m: m.fit(X0, y0, validation_data=(X0, y0, -np.ones(N)), verbose=0),
     ValueError, r"sample_weight must be non-negative\. Received: -1\.0 at index 0"),
    ("fit-validation_data-shape", lambda m: m.fit(X0, y0, validation_data=X0, verbose=0), TypeError,
     r"validation_data must be \(X_val, y_val\) or \(X_val, y_val, sample_weight_val\)"),
    ("fit-validation_data-one", lambda m: m.fit(X0, y0, validation_data=(X0,), verbose=0), TypeError,
     r"validation_data must be \(X_val, y_val\)"),
    ("fit-validation-both", lambda m: m.fit(X0, y0, validation_data=(X0, y0), validation_split=0.5, verbose=0),
     ValueError, r"give validation_data or validation_split, not both"),
    ("fit-verbose", lambda m: m.fit(X0, y0, verbose=3), ValueError,
     r"verbose must be 0, 1 or 2\. Received: verbose=3"),
    ("fit-on_nan", lambda m: m.fit(X0, y0, on_nan="ignore", verbose=0), ValueError,
     r"on_nan must be 'raise' or 'stop'\. Received: on_nan='ignore'"),
    ("fit-callbacks", lambda m: m.fit(X0, y0, callbacks=[print], verbose=0), TypeError,
     r"callbacks must be bp\.Callback instances\. Received: builtin_function_or_method"),
    ("partial_fit-batch_size-0", lambda m: m.partial_fit(X0, y0, batch_size=0), ValueError,
     r"batch_size must be a positive integer\. Received: batch_size=0"),
    ("predict-batch_size-0", lambda m: m.predict(X0, batch_size=0), ValueError,
     r"batch_size must be a positive integer\. Received: batch_size=0"),
    ("evaluate-batch_size-0", lambda m: m.evaluate(X0, y0, batch_size=0), ValueError,
     r"batch_size must be a positive integer\. Received: batch_size=0"),
    ("evaluate-loss-unknown", lambda m: m.evaluate(X0, y0, loss="hinge"), ValueError,
     r"Unknown loss 'hinge'\. Valid values: 'mse', 'binary_cross_entropy', 'cross_entropy'"),
    ("gradients-loss-unknown", lambda m: m.gradients(X0, y0, loss="hinge"), ValueError,
     r"Unknown loss 'hinge'\. Valid values:"),
    ("gradients-loss-output-mismatch", lambda m: m.gradients(X0, y0, loss="binary_cross_entropy"),
     ValueError, r"loss 'binary_cross_entropy' needs an output activation in \('sigmoid'\)"),
    ("backward-total_samples-0", lambda m: m.backward(X0, y0, total_samples=0), ValueError,
     r"total_samples must be a positive integer\. Received: total_samples=0"),
    ("backward-total_samples-str", lambda m: m.backward(X0, y0, total_samples="20"), TypeError,
     r"total_samples must be a positive integer\. Received: total_samples='20'"),
    ("compile-loss-unknown", lambda m: m.compile(loss="hinge"), ValueError, r"Unknown loss 'hinge'"),
    ("compile-loss-output-mismatch", lambda m: m.compile(loss="binary_cross_entropy"), ValueError,
     r"loss 'binary_cross_entropy' needs an output activation"),
    ("compile-optimizer-unknown", lambda m: m.compile(loss="mse", optimizer="lbfgs"), ValueError,
     r"Unknown optimizer 'lbfgs'"),
]

# Only a built model has these to get wrong.
BUILT_ONLY = [
    ("fit-validation_data-X-width", lambda m: m.fit(X0, y0, validation_data=(X0[:, :2], y0), verbose=0),
     ValueError, r"X_val must have 4 features \(the model's input width\)\. Received: X_val with shape \(10, 2\)"),
    ("step-optimizer-unknown", lambda m: m.step("lbfgs"), ValueError,
     r"Unknown optimizer 'lbfgs'\. Valid values: 'sgd', 'adam', 'adamw'"),
    ("set_flat_params-shape", lambda m: m.set_flat_params(np.zeros(3)), ValueError,
     r"params must have shape \(43,\)\. Received: shape \(3,\)"),
    ("set_flat_params-2d", lambda m: m.set_flat_params(np.zeros((43, 1))), ValueError, r"params must be 1-D"),
    ("set_flat_params-nan", lambda m: m.set_flat_params(_with(np.zeros(43), 7, np.nan)), ValueError,
     r"params must contain only finite values\. Received: nan at index \(7\)"),
    ("layer-W-shape", lambda m: setattr(m.layers[0], "W", np.zeros((5, 4))), ValueError,
     r"W must have shape \(4, 5\)\. Received: shape \(5, 4\)"),
    ("layer-W-inf", lambda m: setattr(m.layers[0], "W", _with(np.zeros((4, 5)), (1, 3), np.inf)),
     ValueError, r"W must contain only finite values\. Received: inf at row, column \(1, 3\)"),
    ("layer-W-complex", lambda m: setattr(m.layers[0], "W", np.zeros((4, 5)) + 0j), TypeError,
     r"W must be real numbers\. Received: dtype complex128"),
    ("layer-W-bool", lambda m: setattr(m.layers[0], "W", np.ones((4, 5), bool)), TypeError,
     r"W must be real numbers\. Received: dtype bool"),
    ("layer-W-object", lambda m: setattr(m.layers[0], "W", [[None] * 5] * 4), TypeError,
     r"W must be real numbers\. Received: dtype object"),
    ("layer-b-shape", lambda m: setattr(m.layers[1], "b", np.zeros(2)), ValueError,
     r"b must have shape \(3,\)\. Received: shape \(2,\)"),
    ("layer-b-nan", lambda m: setattr(m.layers[1], "b", [0, np.nan, 0]), ValueError,
     r"b must contain only finite values\. Received: nan at index \(1\)"),
    ("add-after-build", lambda m: m.add(bp.Dense(2)), ValueError,
     r"cannot add a layer to a built model"),
    ("save-path-type", lambda m: m.save(None), TypeError,
     r"expected str, bytes or os\.PathLike object, not NoneType"),
    ("save-missing-directory", lambda m: m.save("/nonexistent-dir-bp/model.npz"), FileNotFoundError,
     r"No such file or directory"),
]

# An unbuilt model has no width to check X_val against (X gives it), and nothing to get or save.
UNBUILT_ONLY = [
    ("fit-validation_data-X-width", lambda m: m.fit(X0, y0, validation_data=(X0[:, :2], y0), verbose=0),
     ValueError, r"X_val must have 4 features, as X has\. Received: X_val with shape \(10, 2\)"),
    ("save", lambda m: m.save("unbuilt.npz"), ValueError,
     r"the model is not built yet: call fit, predict or build\(input_dim\) first"),
    ("get_flat_params", lambda m: m.get_flat_params(), ValueError, r"the model is not built yet"),
    ("step", lambda m: m.step(bp.SGD()), ValueError, r"the model is not built yet"),
    ("layer-W-get", lambda m: m.layers[0].W, ValueError,
     r"is not built yet: its input width is taken from the data"),
    ("layer-W-set", lambda m: setattr(m.layers[0], "W", np.zeros((4, 5))), ValueError, r"is not built yet"),
]


def _params(rows):
    return [pytest.param(c, e, r, id=i) for i, c, e, r in rows]


@pytest.mark.parametrize("call, exc, regex", _params(BAD_ARGS + BUILT_ONLY))
def test_bad_argument_leaves_a_trained_model_unchanged(call, exc, regex):
    model = classifier()
    assert model.n_params == 43  # the regexes above count on it
    model.gradients(X0[:3], y0[:3])  # something in the cached passes
    before = snapshot(model)
    with pytest.raises(exc, match=regex):
        call(model)
    assert_unchanged(before, snapshot(model))


@pytest.mark.parametrize("call, exc, regex", _params(BAD_ARGS + UNBUILT_ONLY))
def test_bad_argument_leaves_an_unbuilt_model_unbuilt(call, exc, regex, tmp_path, monkeypatch):
    """Building draws from the seeded generator: a rejected call must leave the model unbuilt and
    its generator untouched, and write no file."""
    monkeypatch.chdir(tmp_path)
    model = classifier(trained=False)
    before = snapshot(model)
    with pytest.raises(exc, match=regex):
        call(model)
    assert_unchanged(before, snapshot(model))
    assert not model.built and list(tmp_path.iterdir()) == []


def test_failing_initializer_leaves_no_layer_half_built():
    def bad(shape, rng):
        rng.standard_normal(5)  # it consumed the generator, then failed
        return np.zeros((1, 1))

    model = bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(3, kernel_initializer=bad)], seed=0)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"kernel_initializer must return shape \(5, 3\)\. Received: shape \(1, 1\)"):
        model.predict(X0)
    assert_unchanged(before, snapshot(model))
    assert not any(L.built for L in model.layers)


def test_empty_sequential():
    model = bp.Sequential()
    for call in (lambda: model.fit(X0, y0, verbose=0), lambda: model.evaluate(X0, y0),
                 lambda: model.gradients(X0, y0), lambda: model.predict(X0),
                 lambda: model.build(4)):
        with pytest.raises(ValueError, match=r"a Sequential needs at least one layer\. Received: no layers"):
            call()
    assert not model.built


# ---- constructors: Sequential, Dense, the optimizers, threads ---------------------------------
BAD_CONSTRUCTION = [
    ("Sequential-dtype-float16", lambda: bp.Sequential(dtype="float16"), TypeError,
     r"dtype must be float32 or float64\. Received: dtype='float16'"),
    ("Sequential-dtype-int", lambda: bp.Sequential(dtype="int32"), TypeError,
     r"dtype must be float32 or float64\. Received: dtype='int32'"),
    ("Sequential-dtype-nonsense", lambda: bp.Sequential(dtype="banana"), TypeError,
     r"dtype must be float32 or float64\. Received: dtype='banana'"),
    ("Sequential-seed-str", lambda: bp.Sequential(seed="1"), TypeError,
     r"seed must be an int or None\. Received: seed='1'"),
    ("Sequential-seed-float", lambda: bp.Sequential(seed=1.5), TypeError,
     r"seed must be an int or None\. Received: seed=1\.5"),
    ("Sequential-seed-bool", lambda: bp.Sequential(seed=True), TypeError,
     r"seed must be an int or None\. Received: seed=True"),
    ("Sequential-layer-type", lambda: bp.Sequential([3]), TypeError,
     r"Sequential holds bp layers \(Dense, Dropout, .*\)\. Received: int"),
    ("Sequential-second-layer-type", lambda: bp.Sequential([bp.Dense(2), "relu"]), TypeError,
     r"Sequential holds bp layers \(Dense, Dropout, .*\)\. Received: str"),
    ("Sequential-input_dim-0", lambda: bp.Sequential([bp.Dense(2)], input_dim=0), ValueError,
     r"input_dim must be a positive integer\. Received: input_dim=0"),
    ("Sequential-shared-layer", lambda: (lambda L: (bp.Sequential([L]), bp.Sequential([L])))(bp.Dense(2)),
     ValueError, r"already belongs to another model; use a new Dense"),
    ("Dense-units-0", lambda: bp.Dense(0), ValueError,
     r"Dense units must be a positive integer\. Received: units=0"),
    ("Dense-units-negative", lambda: bp.Dense(-3), ValueError,
     r"Dense units must be a positive integer\. Received: units=-3"),
    ("Dense-units-float", lambda: bp.Dense(2.5), ValueError,
     r"Dense units must be a positive integer\. Received: units=2\.5"),
    ("Dense-units-str", lambda: bp.Dense("8"), ValueError,
     r"Dense units must be a positive integer\. Received: units='8'"),
    ("Dense-units-bool", lambda: bp.Dense(True), ValueError,
     r"Dense units must be a positive integer\. Received: units=True"),
    ("Dense-activation-unknown", lambda: bp.Dense(3, activation="relux"), ValueError,
     r"Unknown activation 'relux'\. Valid values: 'identity', 'sigmoid', 'tanh', 'relu', "
     r"'leaky_relu', 'gelu', 'softmax'"),
    ("Dense-activation-type", lambda: bp.Dense(3, activation=3), TypeError,
     r"activation must be a string\. Received: 3"),
    ("Dense-alpha-negative", lambda: bp.Dense(3, activation="leaky_relu", alpha=-0.1), ValueError,
     r"alpha must be a finite number in \[0\.0, inf\)\. Received: alpha=-0\.1"),
    ("Dense-alpha-nan", lambda: bp.Dense(3, alpha=float("nan")), ValueError,
     r"alpha must be a finite number in \[0\.0, inf\)\. Received: alpha=nan"),
    ("Dense-input_dim-0", lambda: bp.Dense(3, input_dim=0), ValueError,
     r"input_dim must be a positive integer\. Received: input_dim=0"),
    ("Dense-initializer-unknown", lambda: bp.Dense(3, kernel_initializer="orthogonal"), ValueError,
     r"Unknown kernel_initializer 'orthogonal'\. Valid values: 'glorot_uniform', 'glorot_normal', "
     r"'he_uniform', 'he_normal', 'zeros'"),
    ("SGD-momentum-1", lambda: bp.SGD(momentum=1.0), ValueError,
     r"momentum must be a finite number in \[0\.0, 1\.0\)\. Received: momentum=1\.0"),
    ("SGD-nesterov-without-momentum", lambda: bp.SGD(nesterov=True), ValueError,
     r"nesterov=True needs a momentum > 0\. Received: momentum=0"),
    ("SGD-weight_decay-negative", lambda: bp.SGD(weight_decay=-1e-4), ValueError,
     r"weight_decay must be a finite number in \[0\.0, inf\)\. Received: weight_decay=-0\.0001"),
    ("Adam-beta1-1", lambda: bp.Adam(beta1=1.0), ValueError,
     r"beta1 must be a finite number in \[0\.0, 1\.0\)\. Received: beta1=1\.0"),
    ("Adam-beta2-negative", lambda: bp.Adam(beta2=-0.5), ValueError,
     r"beta2 must be a finite number in \[0\.0, 1\.0\)\. Received: beta2=-0\.5"),
    ("Adam-eps-0", lambda: bp.Adam(eps=0), ValueError,
     r"eps must be a finite number in \(0\.0, inf\)\. Received: eps=0"),
    ("AdamW-clip_norm-0", lambda: bp.AdamW(clip_norm=0.0), ValueError,
     r"clip_norm must be a finite number in \(0\.0, inf\)\. Received: clip_norm=0\.0"),
    ("set_num_threads-0", lambda: bp.set_num_threads(0), ValueError,
     r"n_threads == 0 is invalid: expected None, -1 \(all cores\) or a nonzero int\. Received: n_threads=0"),
    ("set_num_threads-str", lambda: bp.set_num_threads("2"), TypeError,
     r"n_threads must be None or an int, got str: '2'"),
    ("load-path-type", lambda: bp.load(None), TypeError,
     r"expected str, bytes or os\.PathLike object, not NoneType"),
    ("load-missing", lambda: bp.load("/nonexistent-dir-bp/model.npz"), FileNotFoundError,
     r"No such file or directory"),
]
BAD_APPLY = [
    ("grads-shorter", np.zeros(10, np.float32), np.ones(5, np.float32), ValueError,
     r"grads must have shape \(10,\)\. Received: grads with shape \(5,\)"),
    ("grads-other-dtype", np.zeros(10, np.float32), np.ones(10), TypeError,
     r"grads must have the dtype of params \(float32\)\. Received: grads with dtype float64"),
    ("params-2d", np.zeros((2, 5)), np.ones((2, 5)), ValueError,
     r"params must be 1-D \(the flat parameter vector\)\. Received: params with shape \(2, 5\)"),
    ("params-list", [0.0, 0.0], [1.0, 1.0], TypeError,
     r"params must be a float32 or float64 numpy\.ndarray \(it is updated in place\)\. Received: list"),
    ("params-int", np.zeros(3, int), np.ones(3, int), TypeError,
     r"params must be a float32 or float64 numpy\.ndarray .* Received: ndarray with dtype int64"),
    ("params-strided", np.zeros(10)[::2], np.ones(5), ValueError,
     r"params must be C-contiguous \(it is written in place\)"),
    ("params-read-only", np.zeros(3).view(), np.ones(3), ValueError, r"params must be writeable"),
]
BAD_APPLY[-1][1].flags.writeable = False


@pytest.mark.parametrize("cls", [bp.SGD, bp.Adam, bp.AdamW])
@pytest.mark.parametrize("params, grads, exc, regex",
                         [pytest.param(p, g, e, r, id=i) for i, p, g, e, r in BAD_APPLY])
def test_optimizer_apply_checks_its_buffers(cls, params, grads, exc, regex):
    """apply's kernels read len(params) gradients: a shorter gradient would be read out of
    bounds. Each bad buffer is refused before the step count or any state changes."""
    opt = cls(0.1)
    snapshot_params = np.array(params, copy=True)
    with pytest.raises(exc, match=regex):
        opt.apply(params, grads)
    assert opt.iterations == 0 and opt._state == {}
    np.testing.assert_array_equal(np.asarray(params), snapshot_params)


for _cls in (bp.SGD, bp.Adam, bp.AdamW):
    for _lr, _exc, _regex in [
        (0, ValueError, r"learning_rate must be a finite number in \(0\.0, inf\)\. Received: learning_rate=0"),
        (-0.1, ValueError, r"learning_rate must be a finite number in \(0\.0, inf\)\. Received: learning_rate=-0\.1"),
        (float("nan"), ValueError, r"learning_rate must be a finite number in \(0\.0, inf\)\. Received: learning_rate=nan"),
        (float("inf"), ValueError, r"learning_rate must be a finite number in \(0\.0, inf\)\. Received: learning_rate=inf"),
        ("0.1", TypeError, r"learning_rate must be a real number\. Received: learning_rate='0\.1'"),
        (None, TypeError, r"learning_rate must be a real number\. Received: learning_rate=None"),
        (True, TypeError, r"learning_rate must be a real number\. Received: learning_rate=True"),
        (1 + 1j, TypeError, r"learning_rate must be a real number\. Received: learning_rate=\(1\+1j\)"),
    ]:
        BAD_CONSTRUCTION.append((f"{_cls.__name__}-learning_rate-{_lr!r}",
                                 (lambda c, v: lambda: c(learning_rate=v))(_cls, _lr), _exc, _regex))


@pytest.mark.parametrize("call, exc, regex",
                         [pytest.param(c, e, r, id=i) for i, c, e, r in BAD_CONSTRUCTION])
def test_bad_construction(call, exc, regex):
    threads = bp.get_num_threads()
    with pytest.raises(exc, match=regex):
        call()
    assert bp.get_num_threads() == threads


# ---- unusual but valid inputs: the same answer as the plain array, to the bit -----------------
class PandasLike:
    """What bp needs of a pandas DataFrame or Series: to_numpy()."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def to_numpy(self):
        return self._a.copy()


def _readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _memmap(a, tmp_path, name):
    path = tmp_path / f"{name}.npy"
    np.save(path, np.asarray(a))
    return np.load(path, mmap_mode="r")  # read-only, memory-mapped


UNUSUAL_X = {
    "list": lambda X, tmp: X.tolist(),
    "pandas_like": lambda X, tmp: PandasLike(X),
    "fortran": lambda X, tmp: np.asfortranarray(X),
    "strided_rows": lambda X, tmp: np.repeat(X, 2, axis=0)[::2],
    "strided_columns": lambda X, tmp: np.repeat(X, 3, axis=1)[:, ::3],
    "reversed": lambda X, tmp: X[::-1].copy()[::-1],
    "read_only": lambda X, tmp: _readonly(X),
    "memmap": lambda X, tmp: _memmap(X, tmp, "X"),
    "float32": lambda X, tmp: X.astype(np.float32),
    "broadcast_row": None,  # tested on its own below (its rows are all equal)
}
UNUSUAL_X = {k: v for k, v in UNUSUAL_X.items() if v is not None}
UNUSUAL_Y = {
    "list": lambda y, tmp: y.tolist(),
    "pandas_like": lambda y, tmp: PandasLike(y),
    "int32": lambda y, tmp: y.astype(np.int32),
    "uint8": lambda y, tmp: y.astype(np.uint8),
    "float_labels": lambda y, tmp: y.astype(float),
    "column": lambda y, tmp: y.reshape(-1, 1),
    "one_hot": lambda y, tmp: np.eye(N_CLASSES)[y],
    "one_hot_fortran": lambda y, tmp: np.asfortranarray(np.eye(N_CLASSES)[y]),
    "read_only": lambda y, tmp: _readonly(y),
    "memmap": lambda y, tmp: _memmap(y, tmp, "y"),
}


def _results(model, X, y, w=None):
    """What each entry point answers on (X, y): predictions, loss, gradients, then a fit."""
    out = {"predict": model.predict(X), "evaluate": model.evaluate(X, y, sample_weight=w),
           "gradients": np.concatenate([np.concatenate([g.ravel(), b.ravel()])
                                        for g, b in model.gradients(X, y, sample_weight=w)])}
    model.fit(X, y, sample_weight=w, epochs=2, batch_size=3, verbose=0)
    out["fit"] = model.get_flat_params()
    return out


def _assert_same_results(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert a[k] == b[k], k
        else:
            assert a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("kind", UNUSUAL_X)
def test_unusual_X_gives_the_plain_answer(kind, tmp_path):
    plain = _results(classifier(), X0, y0)
    _assert_same_results(plain, _results(classifier(), UNUSUAL_X[kind](X0, tmp_path), y0))


@pytest.mark.parametrize("kind", UNUSUAL_Y)
def test_unusual_y_gives_the_plain_answer(kind, tmp_path):
    plain = _results(classifier(), X0, y0)
    _assert_same_results(plain, _results(classifier(), X0, UNUSUAL_Y[kind](y0, tmp_path)))


@pytest.mark.parametrize("kind", ["list", "int", "read_only", "fortran_column"])
def test_unusual_sample_weight_gives_the_plain_answer(kind):
    w = np.arange(N) % 3 + 1.0
    unusual = {"list": w.tolist(), "int": w.astype(int), "read_only": _readonly(w),
               "fortran_column": np.asfortranarray(np.stack([w, w], axis=1))[:, 0]}[kind]
    _assert_same_results(_results(classifier(), X0, y0, w), _results(classifier(), X0, y0, unusual))


def test_integer_X_is_cast():
    Xi = (X0 * 10).astype(np.int64)
    _assert_same_results(_results(classifier(), Xi.astype(float), y0), _results(classifier(), Xi, y0))


def test_broadcast_read_only_input():
    row = np.broadcast_to(X0[0], (N, N_FEATURES))  # stride 0, read-only
    model = classifier()
    np.testing.assert_array_equal(model.predict(row), model.predict(np.tile(X0[0], (N, 1))))


@pytest.mark.parametrize("batch_size", [N, N + 1, 10 ** 6])
def test_batch_larger_than_the_data_is_the_data(batch_size):
    a, b = classifier(), classifier()
    a.fit(X0, y0, batch_size=N, epochs=3, verbose=0)
    b.fit(X0, y0, batch_size=batch_size, epochs=3, verbose=0)
    assert params_equal(a, b)
    np.testing.assert_array_equal(a.predict(X0, batch_size=batch_size), a.predict(X0))


def test_single_sample_and_single_feature():
    model = bp.Sequential([bp.Dense(1)], dtype="float64", seed=0)
    model.fit([[2.0]], [3.0], optimizer=bp.SGD(0.1), epochs=1, verbose=0)
    assert model.predict([[2.0]]).shape == (1, 1)


@pytest.mark.parametrize("change", ["params", "optimizer_state", "iterations", "history", "rng", "loss"])
def test_the_snapshot_sees_every_change(change):
    """The tests above are only as good as the snapshot: it must notice each kind of change."""
    model = classifier()
    before = snapshot(model)
    if change == "params":
        model._params[5] = np.nextafter(model._params[5], np.inf)
    elif change == "optimizer_state":
        model.optimizer._state["v"][0] = np.nextafter(model.optimizer._state["v"][0], np.inf)
    elif change == "iterations":
        model.optimizer.iterations += 1
    elif change == "history":
        model.history.stopped = "interrupted"
    elif change == "rng":
        model._rng.random()
    else:
        model.loss = "mse"
    with pytest.raises(AssertionError, match=change.split("_")[0]):
        assert_unchanged(before, snapshot(model))


def _dense_alone_cases():
    for built in (True, False):
        for row in BAD_X:
            if row[0] in ("no_rows", "wrong_features", "no_columns"):
                continue
            if row[0] == "overflows_float32" and not built:
                continue  # an unbuilt layer takes float64 from this X, and -1e300 fits in float64
            yield pytest.param(built, *row, id=f"{'built' if built else 'unbuilt'}-{row[0]}")


@pytest.mark.parametrize("built, case_id, X, exc, regex", list(_dense_alone_cases()))
def test_dense_called_alone_rejects_bad_X(built, case_id, X, exc, regex):
    """A Dense used on its own (layer(X)) checks X like the model does; a layer whose first call
    is rejected stays unbuilt (its input width is taken from the first good X)."""
    layer = bp.Dense(3, activation="relu")
    if built:
        layer.build(N_FEATURES, seed=0)
        W = layer.W.copy()
    with pytest.raises(exc, match=regex.replace("the model's input width", "the layer's input width")):
        layer(X)
    assert layer.built == built
    if built:
        assert layer.W.tobytes() == W.tobytes()


def test_dense_called_alone_checks_width_and_accepts_unusual_X():
    layer = bp.Dense(3, activation="tanh")
    layer.build(N_FEATURES, seed=0)
    with pytest.raises(ValueError, match=r"X must have 4 features \(the layer's input width\)\. "
                                         r"Received: X with shape \(10, 5\)"):
        layer(np.zeros((N, N_FEATURES + 1)))
    plain = layer(X0.astype(np.float32))
    for unusual in (X0.tolist(), np.asfortranarray(X0), _readonly(X0), PandasLike(X0)):
        assert layer(unusual).tobytes() == plain.tobytes()
    assert layer(np.zeros((0, N_FEATURES))).shape == (0, 3)  # an empty batch: an empty answer
