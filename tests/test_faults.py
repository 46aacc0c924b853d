"""Faults during fit: divergence and Ctrl-C. What must hold for both step runners of
bp/_training.py (the compiled one and the Python one):

* Divergence is detected before the update: when the loss, a gradient, an updated parameter or
  the optimizer's state becomes non-finite, fit raises TrainingDivergedError (or, with
  on_nan="stop" / TerminateOnNaN, returns History(stopped="diverged")) naming the epoch, the batch,
  where (forward, error signal, gradients or update), the layer, the sample of the batch and its
  row of X. The parameters AND the optimizer state (momenta, step count) are exactly those after
  the last completed step: bit-identical to a replay that stops there.
* Ctrl-C (SIGINT) stops fit after the step in flight and fit returns History(stopped=
  "interrupted", stopped_at={"epoch", "batch"} of the last completed step); the parameters and
  optimizer state are bit-identical to a replay of that many steps; the model predicts, saves,
  loads and trains on. Python's SIGINT handler is back in place afterwards.

The replay stops a second, identically seeded model with a callback that raises KeyboardInterrupt
after the wanted step: the one place where a stop is certainly between steps.
"""

import _thread
import math
import re
import signal
import threading
import time

import numpy as np
import pytest

import bp
from bp.sequential import TrainingDivergedError

try:  # tests/ as a package (it has an __init__.py) or as a plain directory on sys.path
    from ._reliability import params_equal
except ImportError:
    from _reliability import params_equal


class StopAfter(bp.Callback):
    """Raise KeyboardInterrupt after step `batch` of epoch `epoch` completes."""

    def __init__(self, epoch, batch):
        self.target = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.target:
            raise KeyboardInterrupt


def n_steps(stopped_at, batches_per_epoch):
    return stopped_at["epoch"] * batches_per_epoch + stopped_at["batch"] + 1


def assert_same_state(a, b):
    """Bit-identical parameters and optimizer state."""
    assert params_equal(a, b)
    assert a.optimizer.iterations == b.optimizer.iterations
    assert a.optimizer._state.keys() == b.optimizer._state.keys()
    for k in a.optimizer._state:
        assert a.optimizer._state[k].tobytes() == b.optimizer._state[k].tobytes(), k


def regression_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, X @ np.array([1.0, -2.0, 0.5])


def mlp(seed=0, dtype="float32", **dense0):
    return bp.Sequential([bp.Dense(8, activation="relu", **dense0), bp.Dense(1)], dtype=dtype, seed=seed)


# ---- divergence -------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [lambda: bp.SGD(1e3), lambda: bp.SGD(50.0, momentum=0.9)],
                         ids=["sgd", "sgd-momentum"])
def test_learning_rate_that_blows_up(optimizer):
    X, y = regression_data()
    model = mlp()
    with pytest.raises(TrainingDivergedError,
                       match=r"training diverged at epoch \d+, batch \d+: non-finite values in the "
                             r"(forward \(z_out\)|loss|error signal \(delta\)|gradients|update).*"
                             r"the model keeps the last finite weights") as info:
        model.fit(X, y, optimizer=optimizer(), epochs=200, batch_size=16, shuffle=True, verbose=0)
    err, h = info.value, model.history
    assert h.stopped == "diverged"
    assert h.diverged["epoch"] == err.epoch and h.diverged["batch"] == err.batch
    assert np.isfinite(model.get_flat_params()).all()
    steps = n_steps(h.stopped_at, 4)
    assert model.optimizer.iterations == steps
    assert (h.stopped_at["epoch"], h.stopped_at["batch"] + 1) == (err.epoch, err.batch) or (
        h.stopped_at["epoch"] + 1 == err.epoch and err.batch == 0)
    # the last finite step, bit for bit (optimizer state too)
    replay = mlp()
    r = replay.fit(X, y, optimizer=optimizer(), epochs=200, batch_size=16, shuffle=True, verbose=0,
                   callbacks=[StopAfter(**h.stopped_at)])
    assert r.stopped == "interrupted"
    assert_same_state(model, replay)
    # and the model is usable: it predicts and evaluates without error
    model.predict(X)
    model.evaluate(X, y)


@pytest.mark.parametrize("how", ["on_nan", "TerminateOnNaN"])
def test_divergence_policy_stop(how):
    X, y = regression_data()
    model = mlp()
    kwargs = {"on_nan": "stop"} if how == "on_nan" else {"callbacks": [bp.TerminateOnNaN()]}
    h = model.fit(X, y, optimizer=bp.SGD(1e3), epochs=200, batch_size=16, verbose=0, **kwargs)
    assert h.stopped == "diverged"
    assert set(h.diverged) == {"epoch", "batch", "layer", "sample", "row", "where"}
    assert np.isfinite(model.get_flat_params()).all()
    assert model.optimizer.iterations == n_steps(h.stopped_at, 4)


def test_history_diverged_is_none_without_divergence():
    X, y = regression_data()
    h = mlp().fit(X, y, epochs=1, verbose=0)
    assert h.diverged is None and h.stopped is None


def _ones(shape, rng):
    return np.ones(shape)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("validation_split", [0.0, 0.25])
def test_overflow_from_the_data_names_layer_sample_and_row(shuffle, validation_split):
    """A finite but huge row of X (3e38 fits in float32) overflows in layer 0's forward pass:
    the error names layer 0 and that row of X, through the shuffle and the validation split."""
    X, y = regression_data(n=40)
    bad_row = 29
    X[bad_row] = 3e38
    model = bp.Sequential([bp.Dense(4, kernel_initializer=_ones), bp.Dense(1)], seed=0)
    with pytest.raises(TrainingDivergedError) as info:
        model.fit(X, y, optimizer=bp.SGD(1e-3), epochs=3, batch_size=8, shuffle=shuffle,
                  validation_split=validation_split, verbose=0)
    err = info.value
    if validation_split and err.row is None:  # the row went to the validation set
        pytest.skip("the bad row was held out for validation")
    assert err.where == "forward (z_out)" and err.layer == 0 and err.row == bad_row
    assert re.search(rf"in the forward \(z_out\) of layer 0, first at sample {err.sample} of the "
                     rf"batch \(row {bad_row} of X\)", str(err))
    assert np.isfinite(model.get_flat_params()).all()


def test_non_finite_error_signal_names_its_layer():
    """Forward and loss finite, but delta[0] = (delta[1] @ W[1].T) * tanh' overflows: the error
    names the error signal of layer 0. With X = 0 every z is 0, so f_out - y = -1e18 (squared
    1e36, finite in float32), delta[1] = -2.5e17, and times W[1] = 1e22 it is -inf."""
    X = np.zeros((8, 3))
    model = bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(1)], seed=0)
    model.build(3)
    model.layers[1].W = np.full((5, 1), 1e22)
    y = np.full(8, 1e18)
    before = model.get_flat_params()
    with pytest.raises(TrainingDivergedError,
                       match=r"epoch 0, batch 0: non-finite values in the error signal \(delta\) "
                             r"of layer 0, first at sample 0 of the batch \(row 0 of X\)"):
        model.fit(X, y, optimizer=bp.SGD(1e-3), batch_size=8, shuffle=False, verbose=0)
    assert model.get_flat_params().tobytes() == before.tobytes()
    assert model.optimizer.iterations == 0


def test_nan_injected_by_a_callback_is_caught_before_the_update():
    """A callback puts a huge (finite) weight into layer 1 after some step; the next step's
    forward overflows. fit stops before updating: the weights are those the callback left."""
    X, y = regression_data()

    class Inject(bp.Callback):
        def on_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations == 5:
                self.model.layers[1].W = np.full((8, 1), 3e38)
                self.after = self.model.get_flat_params()
                self.state = {k: v.copy() for k, v in self.model.optimizer._state.items()}

    inject = Inject()
    model = mlp()
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, batch 1: non-finite values") as info:
        model.fit(X, y, optimizer=bp.Adam(1e-3), epochs=3, batch_size=16, verbose=0,
                  callbacks=[inject])
    assert info.value.layer is not None
    assert model.get_flat_params().tobytes() == inject.after.tobytes()
    assert model.optimizer.iterations == 5
    for k, v in inject.state.items():
        assert model.optimizer._state[k].tobytes() == v.tobytes()


def test_adam_second_moment_overflow_is_caught():
    """float32: gradients of ~1e20 are finite (their sum of squares, taken in double, too), but
    Adam's v = b2 v + (1 - b2) g^2 overflows to inf while the parameters stay finite, which
    would freeze them silently. fit must see it and undo the update (state included)."""
    X = np.full((4, 2), 3e10)  # grad_W = 3.6e21; (1 - b2) g^2 = 1.3e40 > 3.4e38
    y = np.zeros(4)
    model = bp.Sequential([bp.Dense(1, kernel_initializer=_ones)], seed=0)
    with pytest.raises(TrainingDivergedError, match=r"epoch 0, batch 0: non-finite values in the update") as info:
        model.fit(X, y, optimizer=bp.Adam(1e-3), batch_size=4, verbose=0)
    assert info.value.where == "update"
    assert model.optimizer.iterations == 0
    assert all(np.isfinite(v).all() and not v.any() for v in model.optimizer._state.values())
    np.testing.assert_array_equal(model.layers[0].W, np.ones((2, 1), np.float32))


def test_sgd_update_overflow_restores_params_and_velocity():
    """An update that overflows the parameters (finite gradient, huge step) is undone entirely."""
    X = np.ones((4, 1))
    y = np.zeros(4)
    model = bp.Sequential([bp.Dense(1, kernel_initializer=_ones)], seed=0)
    opt = bp.SGD(3e38, momentum=0.5)
    h = model.fit(X, y, optimizer=opt, batch_size=4, epochs=2, verbose=0, on_nan="stop")
    assert h.stopped == "diverged" and h.diverged["where"] == "update"
    assert np.isfinite(model.get_flat_params()).all()
    assert np.isfinite(opt._state["velocity"]).all()
    assert opt.iterations == (0 if h.stopped_at is None else n_steps(h.stopped_at, 1))


# ---- Ctrl-C -----------------------------------------------------------------------------------

SENDERS = {
    "raise_signal": lambda: signal.raise_signal(signal.SIGINT),
    "interrupt_main": _thread.interrupt_main,
}


class InterruptSoon(bp.Callback):
    """Send SIGINT from another thread `delay` seconds after training has started (so the test
    never races fit's set-up). Deliberately no on_batch_end: a compiled loop runs on its own."""

    def __init__(self, send, delay):
        self.send, self.delay, self.sent_at = send, delay, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0:
            def fire():
                self.sent_at = time.perf_counter()
                self.send()
            threading.Timer(self.delay, fire).start()


def interruption_data():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((512, 16))
    return X, rng.integers(0, 4, 512)


def classifier4(seed=0):
    return bp.Sequential([bp.Dense(32, activation="relu"), bp.Dense(4, activation="softmax")], seed=seed)


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize("accumulate", [1, 2])
def test_ctrl_c_stops_after_the_step_in_flight(sender, accumulate, tmp_path):
    X, y = interruption_data()
    batch_size, epochs = 16, 100_000
    steps_per_epoch = math.ceil(len(X) / (batch_size * accumulate))
    model = classifier4()
    cb = InterruptSoon(SENDERS[sender], delay=0.3)
    h = model.fit(X, y, optimizer=bp.SGD(0.01, momentum=0.9), epochs=epochs, batch_size=batch_size,
                  accumulate=accumulate, verbose=0, callbacks=[cb])
    returned = time.perf_counter()
    assert h.stopped == "interrupted"
    assert cb.sent_at is not None and returned - cb.sent_at < 1.0  # promptly
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    steps = n_steps(h.stopped_at, steps_per_epoch)
    assert model.optimizer.iterations == steps
    # History records the epochs whose end (logs, validation, callbacks) ran: those before the
    # interrupted one, and that one too if its last step completed and Ctrl-C came during its end
    e, last = h.stopped_at["epoch"], h.stopped_at["batch"] + 1 == steps_per_epoch
    assert h.epoch == list(range(e)) or (last and h.epoch == list(range(e + 1)))

    replay = classifier4()
    r = replay.fit(X, y, optimizer=bp.SGD(0.01, momentum=0.9), epochs=epochs, batch_size=batch_size,
                   accumulate=accumulate, verbose=0, callbacks=[StopAfter(**h.stopped_at)])
    assert r.stopped == "interrupted" and r.stopped_at == h.stopped_at
    assert_same_state(model, replay)

    # usable: predicts, saves, loads, and trains on from where it stopped
    path = tmp_path / "interrupted.npz"
    model.save(path)
    again = bp.load(path)
    assert_same_state(model, again)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    h2 = model.fit(X, y, epochs=1, batch_size=batch_size, verbose=0)
    assert h2.stopped is None and model.optimizer.iterations == steps + math.ceil(len(X) / batch_size)


def test_ctrl_c_during_validation_stops_at_the_epoch_end():
    X, y = interruption_data()

    class InterruptInEpochEnd(bp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                signal.raise_signal(signal.SIGINT)

    model = classifier4()
    h = model.fit(X, y, epochs=50, batch_size=128, validation_split=0.25, verbose=0,
                  callbacks=[InterruptInEpochEnd()])
    assert h.stopped == "interrupted"
    assert h.stopped_at == {"epoch": 1, "batch": 2} and h.epoch == [0, 1]
    assert model.optimizer.iterations == 6


def test_sigint_handler_restored_after_divergence_and_errors():
    X, y = regression_data()
    with pytest.raises(TrainingDivergedError):
        mlp().fit(X, y, optimizer=bp.SGD(1e3), epochs=200, verbose=0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    class Boom(bp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        mlp().fit(X, y, epochs=2, verbose=0, callbacks=[Boom()])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_user_sigint_handler_is_left_alone():
    """Under a handler the user installed, fit changes nothing: their handler gets the signal."""
    X, y = interruption_data()
    got = []

    class Send(bp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                signal.raise_signal(signal.SIGINT)

    def mine(signum, frame):
        got.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        h = classifier4().fit(X, y, epochs=2, batch_size=256, verbose=0, callbacks=[Send()])
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)
    assert got == [signal.SIGINT] and h.stopped is None and h.epoch == [0, 1]


def test_fit_in_a_worker_thread_leaves_signals_alone():
    X, y = interruption_data()
    out = {}

    def work():
        out["h"] = classifier4().fit(X, y, epochs=2, batch_size=256, verbose=0)
        out["handler"] = signal.getsignal(signal.SIGINT)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["h"].stopped is None and out["handler"] is signal.default_int_handler



