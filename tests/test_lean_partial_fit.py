"""partial_fit's straight line (bp/_online.py) and prepare's quick checks (bp/_passes.py) give
what fit's own path gives: the same bits, the same History, the same errors with nothing changed,
Ctrl-C after the step in flight. Nothing is cached between calls, so a changed X, y, parameter
or layer weight is seen by the next call: the tests change each and compare with fit's path."""

import _thread
import signal
import threading

import numpy as np
import pytest

import bp
from bp import _passes, _training
from bp.sequential import TrainingDivergedError
from bpcore import _loss

try:  # tests/ as a package (it has an __init__.py) or as a plain directory on sys.path
    from ._reliability import params_equal
except ImportError:
    from _reliability import params_equal


def _model(dtype="float32", optimizer=None, loss="cross_entropy", out=3, seed=4):
    model = bp.Sequential([bp.Dense(8, activation="relu"),
                           bp.Dense(out, activation="softmax" if loss == "cross_entropy"
                                    else "identity")], dtype=dtype, seed=seed)
    model.compile(loss=loss, optimizer=optimizer or bp.SGD(0.05))
    return model.build(5)


def _data(rows, seed, out=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 5)), rng.integers(0, out, rows)


@pytest.fixture
def full_path_calls(monkeypatch):
    """Counts the calls that leave the straight line for fit's own path."""
    calls = []
    original = _training.partial_fit

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(_training, "partial_fit", spy)
    return calls


def _same_state(a, b):
    assert params_equal(a, b)
    assert a.optimizer.iterations == b.optimizer.iterations
    assert a.optimizer._epoch == b.optimizer._epoch
    for k in a.optimizer._state:
        assert a.optimizer._state[k].tobytes() == b.optimizer._state[k].tobytes(), k
    assert a._rng.bit_generator.state == b._rng.bit_generator.state


def _same_history(h, g):
    assert h.history == g.history and h.epoch == g.epoch
    assert (h.stopped, h.stopped_at, h.diverged) == (g.stopped, g.stopped_at, g.diverged)


OPTIMIZERS = {
    "sgd": lambda: bp.SGD(0.05),
    "momentum": lambda: bp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam_clip": lambda: bp.Adam(0.01, global_clipnorm=0.5),
    "schedule": lambda: bp.SGD(bp.schedules.StepDecay(0.1, step_size=1, gamma=0.5)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("rows, kwargs", [
    (8, {}),                                             # one step: the online-learning call
    (23, {"batch_size": 4}),                             # several steps, a short last one
    (23, {"batch_size": 4, "accumulate": 2, "shuffle": False}),
])
def test_the_straight_line_gives_fit_paths_bits(dtype, opt, rows, kwargs, full_path_calls):
    lean, full = _model(dtype, OPTIMIZERS[opt]()), _model(dtype, OPTIMIZERS[opt]())
    for seed in range(4):
        X, y = _data(rows, seed)
        X = X.astype(dtype)  # the quick checks' case: X already in the model's dtype
        h = lean.partial_fit(X, y, **kwargs)
        g = _training.partial_fit(full, X, y, **kwargs)
        _same_history(h, g)
        _same_state(lean, full)
        assert lean.history is h
    assert len(full_path_calls) == 4  # only the reference calls: the lean ones stayed lean


@pytest.mark.parametrize("case", ["mse", "weights", "int32_labels", "list_X", "one_hot_y"])
def test_inputs_prepare_checks_the_long_way_train_alike(case, full_path_calls):
    loss = "mse" if case == "mse" else "cross_entropy"
    lean, full = _model(loss=loss), _model(loss=loss)
    for seed in range(3):
        X, y = _data(12, seed)
        kwargs = {"batch_size": 5}
        if case == "mse":
            y = np.random.default_rng(seed).standard_normal((12, 3))
        elif case == "weights":
            kwargs["sample_weight"] = np.linspace(0.5, 2, 12)
        elif case == "int32_labels":
            y = y.astype(np.int32)
        elif case == "list_X":
            X = X.tolist()
        else:
            y = np.eye(3)[y]
        _same_history(lean.partial_fit(X, y, **kwargs), _training.partial_fit(full, X, y, **kwargs))
        _same_state(lean, full)
    assert len(full_path_calls) == 3


def _bad_inputs():
    X, y = _data(6, 0)
    X32 = X.astype(np.float32)
    nan = X32.copy()
    nan[4, 2] = np.nan
    inf = X32.copy()
    inf[1, 0] = -np.inf
    return {
        "nan": (nan, y),
        "inf": (inf, y),
        "label_high": (X32, np.where(np.arange(6) == 3, 3, y)),
        "label_negative": (X32, np.where(np.arange(6) == 5, -1, y)),
        "float_labels": (X32, y + 0.5),
        "short_y": (X32, y[:5]),
        "wide_X": (np.ones((6, 6), np.float32), y),
        "one_d_X": (X32[0], y[:1]),
        "empty_X": (X32[:0], y[:0]),
    }


def _bad_calls():
    cases = {name: (X, y, {}) for name, (X, y) in _bad_inputs().items()}
    X, y = _data(6, 0)
    cases.update({"verbose_none": (X, y, {"verbose": None}),
                  "batch_size_zero": (X, y, {"batch_size": 0}),
                  "accumulate_float": (X, y, {"accumulate": 2.0}),
                  "bad_loss": (X, y, {"loss": "hinge"}),
                  "loss_for_another_output": (X, y, {"loss": "binary_cross_entropy"}),
                  "bad_weights": (X, y, {"sample_weight": -np.ones(6)})})
    return cases


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_bad_input_gets_fit_paths_error_and_changes_nothing(case):
    X, y, kwargs = _bad_calls()[case]
    lean, full = _model(), _model()
    lean.partial_fit(*_data(6, 9))  # a model with optimizer state and a history
    full.partial_fit(*_data(6, 9))
    history = lean.history
    before = lean.get_flat_params()
    rng_state = lean._rng.bit_generator.state
    with pytest.raises((ValueError, TypeError)) as lean_error:
        lean.partial_fit(X, y, **kwargs)
    with pytest.raises((ValueError, TypeError)) as full_error:
        _training.partial_fit(full, X, y, **kwargs)
    assert type(lean_error.value) is type(full_error.value)
    assert str(lean_error.value) == str(full_error.value)
    np.testing.assert_array_equal(lean.get_flat_params(), before)
    assert lean.optimizer.iterations == 1 and lean.history is history
    assert lean._rng.bit_generator.state == rng_state


def test_a_changed_x_is_checked_again_on_every_call():
    model = _model()
    X, y = _data(6, 1)
    X = X.astype(np.float32)
    model.partial_fit(X, y)
    X[2, 3] = np.nan  # the same array, written in place
    with pytest.raises(ValueError, match=r"X must contain only finite values.*\(2, 3\)"):
        model.partial_fit(X, y)
    X[2, 3] = 0
    y[0] = 7  # and a label out of range, in the same y
    with pytest.raises(ValueError, match="at index 0 of y"):
        model.partial_fit(X, y)
    assert model.optimizer.iterations == 1


@pytest.mark.parametrize("change", ["set_flat_params", "assign_W", "write_W_in_place", "step"])
def test_parameters_changed_between_calls_are_the_ones_trained(change):
    lean, full = _model(), _model()
    X, y = _data(6, 2)
    lean.partial_fit(X, y)
    _training.partial_fit(full, X, y)
    for model in (lean, full):
        if change == "set_flat_params":
            model.set_flat_params(np.linspace(-1, 1, model.n_params))
        elif change == "assign_W":
            model.layers[0].W = np.full((5, 8), 0.25)
        elif change == "write_W_in_place":
            model.layers[1].W[3, 1] = 4.0
        else:
            model.zero_grad()
            model.backward(X, y)
            model.step()
    X2, y2 = _data(6, 3)
    _same_history(lean.partial_fit(X2, y2), _training.partial_fit(full, X2, y2))
    _same_state(lean, full)


@pytest.mark.parametrize("dtype, huge", [("float32", 3e38), ("float64", 1.7e308)])
def test_the_guard_still_undoes_an_update_that_overflows(dtype, huge):
    """A weight written in place, near the dtype's largest value, with a huge learning rate: the
    update overflows; the guard's bound is worked out afresh each call, so it is undone."""
    results = []
    for call in (lambda m, X, y: m.partial_fit(X, y),
                 lambda m, X, y: _training.partial_fit(m, X, y)):
        model = _model(dtype, bp.SGD(1e30, weight_decay=1.0))
        X, y = _data(6, 4)
        X[:, 0] = 0  # the weight's input is 0: the forward pass stays finite
        model.layers[0].W[0, 0] = huge
        before = model.get_flat_params()
        with pytest.raises(TrainingDivergedError) as error:
            call(model, X.astype(dtype), y)
        assert error.value.where == "update"
        np.testing.assert_array_equal(model.get_flat_params(), before)
        assert model.optimizer.iterations == 0
        results.append((str(error.value), model.history.diverged))
    assert results[0] == results[1]


def test_a_non_finite_gradient_stops_before_the_update_as_fit_does():
    errors = []
    for call in (lambda m, X, y: m.partial_fit(X, y),
                 lambda m, X, y: _training.partial_fit(m, X, y)):
        model = _model("float32")
        model.layers[0].W[0, 0] = 3e38  # finite, but the forward pass overflows
        X, y = _data(6, 5)
        X[:, 0] = 2.0
        before = model.get_flat_params()
        with pytest.raises(TrainingDivergedError) as error:
            call(model, X, y)
        np.testing.assert_array_equal(model.get_flat_params(), before)
        errors.append((str(error.value), error.value.row, model.history.diverged))
    assert errors[0] == errors[1]


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_straight_line_after_the_step_in_flight(full_path_calls):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((300_000, 16)).astype(np.float32)
    y = rng.integers(0, 3, 300_000)
    model = bp.Sequential([bp.Dense(512, activation="relu"), bp.Dense(3, activation="softmax")],
                          seed=1).compile(optimizer=bp.SGD(0.01, momentum=0.9)).build(16)
    replay = bp.Sequential.from_config(model.get_config()).compile(
        optimizer=bp.SGD(0.01, momentum=0.9)).build(16)
    replay.set_flat_params(model.get_flat_params())
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    try:
        h = model.partial_fit(X, y, batch_size=1, shuffle=False)  # seconds: Ctrl-C comes first
    finally:
        timer.cancel()
    assert h.stopped == "interrupted" and h.epoch == [] and not full_path_calls
    steps = h.stopped_at["batch"] + 1
    assert 0 < steps < 300_000 and model.optimizer.iterations == steps
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # the completed steps, and only those: fit's path over the rows they trained on
    r = _training.partial_fit(replay, X[:steps], y[:steps], batch_size=1, shuffle=False)
    assert r.stopped is None and r.stopped_at == h.stopped_at
    _same_state(model, replay)


def test_one_hot_writes_the_rows_and_names_the_first_bad_label():
    for dtype in (np.float32, np.float64):
        Y = np.full((4, 3), 7, dtype)
        assert _loss.one_hot(np.array([2, 0, 1, 2]), Y) == -1
        np.testing.assert_array_equal(Y, np.eye(3, dtype=dtype)[[2, 0, 1, 2]])
        assert _loss.one_hot(np.array([1, 0, 3, -1]), Y) == 2
        assert _loss.one_hot(np.array([-1]), Y[:1]) == 0
        assert _loss.one_hot(np.zeros(0, np.int64), Y[:0]) == -1


def test_prepare_quick_and_long_answers_agree(monkeypatch):
    model = _model("float64")
    X, y = _data(9, 8)
    quick = _passes.prepare(model, X, y, None)
    assert quick[1] is X  # taken as it is: nothing copied
    monkeypatch.setattr(_passes, "_prepare_quickly", lambda *args: None)
    slow = _passes.prepare(model, X, y, None)
    assert quick[0] == slow[0] and quick[3] is slow[3] is None
    np.testing.assert_array_equal(quick[1], slow[1])
    np.testing.assert_array_equal(quick[2], slow[2])
    assert quick[2].dtype == slow[2].dtype and quick[2].flags.c_contiguous


def _sum_of_squares_in_order(x):
    """sum_of_squares' order spelled out: 64 chunks; in each, eight running sums (element i into
    sum i % 8 while a whole group of eight remains, the rest into sum 0), added pairwise; then
    the chunks in order. Plain Python floats: every addition rounds once, in this order."""
    n = len(x)
    size = -(-n // 64)
    total = 0.0
    for c in range(64):
        lo, hi = c * size, min(n, (c + 1) * size)
        acc = [0.0] * 8
        i = lo
        while i + 8 <= hi:
            for k in range(8):
                acc[k] = acc[k] + float(x[i + k]) * float(x[i + k])
            i += 8
        while i < hi:
            acc[0] = acc[0] + float(x[i]) * float(x[i])
            i += 1
        total += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    return total


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_guards_sums_keep_their_order_bit_for_bit(dtype):
    from bpcore import _param_update

    rng = np.random.default_rng(11)
    for n in [0, 1, 7, 8, 9, 63, 64, 65, 130, 515, 1031, 4099]:
        x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3], n)).astype(dtype)
        y = (rng.standard_normal(n) * 10).astype(dtype)
        expected = _sum_of_squares_in_order(x), _sum_of_squares_in_order(y)
        for n_threads in (1, 2):
            assert _param_update.sum_of_squares(x, n_threads) == expected[0]
            assert _param_update.sums_of_squares(x, y, n_threads) == expected
    x = np.ones(100, dtype)
    for bad in (np.inf, np.nan):
        x[37] = bad
        sx, sy = _param_update.sums_of_squares(x, np.ones(100, dtype), 1)
        assert not np.isfinite(sx) and sy == 100.0
    with pytest.raises(ValueError, match="one length"):
        _param_update.sums_of_squares(x, x[1:], 1)
