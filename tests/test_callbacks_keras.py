"""The callbacks Keras users expect (ModelCheckpoint, ReduceLROnPlateau, CSVLogger,
LambdaCallback) and History.plot: each runs in the compiled epoch loop, and only a callback with
an on_batch_end of its own brings fit back to Python after every batch."""

import csv
import os

import numpy as np
import pytest

import bp
from bp import _io, _training

from ._reliability import classifier, data


def _fit(model, callbacks, epochs=3, **kw):
    X, y = data(40)
    return model.fit(X, y, loss="cross_entropy", optimizer=kw.pop("optimizer", bp.Adam(1e-2)),
                     epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks, **kw)


@pytest.fixture
def chunks(monkeypatch):
    """The `count` of every CompiledSteps.run call: the whole epoch (5 steps) unless a callback
    wants every batch."""
    seen = []
    real = _training.CompiledSteps.run

    def run(self, first_step, count):
        seen.append(count)
        return real(self, first_step, count)

    monkeypatch.setattr(_training.CompiledSteps, "run", run)
    return seen


def test_epoch_callbacks_keep_the_whole_epoch_compiled(tmp_path, chunks):
    cbs = [bp.ModelCheckpoint(tmp_path / "m.npz"), bp.ReduceLROnPlateau(patience=1),
           bp.CSVLogger(tmp_path / "log.csv"), bp.LambdaCallback(on_epoch_end=lambda epoch, logs: None)]
    _fit(classifier(trained=False), cbs)
    assert chunks == [5, 5, 5]


def test_lambda_on_batch_end_sees_every_batch(chunks):
    batches, begun, ended, trained = [], [], [], []
    cb = bp.LambdaCallback(on_batch_end=lambda b, logs: batches.append((b, logs["loss"])),
                           on_epoch_begin=lambda e, logs: begun.append(e),
                           on_epoch_end=lambda e, logs: ended.append(logs["loss"]),
                           on_train_begin=lambda logs: trained.append("begin"),
                           on_train_end=lambda logs: trained.append("end"))
    h = _fit(classifier(trained=False), [cb], epochs=2)
    assert chunks == [1] * 10
    assert [b for b, _ in batches] == [0, 1, 2, 3, 4] * 2
    assert all(np.isfinite(loss) for _, loss in batches)
    assert begun == [0, 1] and ended == h.history["loss"] and trained == ["begin", "end"]


def test_lambda_callback_rejects_what_it_cannot_call():
    with pytest.raises(TypeError, match="on_epoch_end must be callable"):
        bp.LambdaCallback(on_epoch_end=3)


# ---- ModelCheckpoint ------------------------------------------------------------------------------


def test_checkpoint_every_epoch_formats_the_path(tmp_path):
    model = classifier(trained=False)
    cb = bp.ModelCheckpoint(tmp_path / "ckpt-{epoch:02d}-{loss:.3f}.npz", monitor="loss")
    h = _fit(model, [cb])
    names = sorted(os.listdir(tmp_path))
    assert names == [f"ckpt-{e + 1:02d}-{loss:.3f}.npz" for e, loss in enumerate(h["loss"])]
    last = bp.load(tmp_path / names[-1])
    np.testing.assert_array_equal(last.get_flat_params(), model.get_flat_params())


def test_checkpoint_best_only_keeps_the_best_epoch(tmp_path):
    X, y = data(40)
    Xv, yv = data(20, seed=1)
    model = classifier(trained=False)
    best = {}

    def remember(epoch, logs):  # the weights after each epoch, by validation loss
        best[logs["val_loss"]] = model.get_flat_params()

    cb = bp.ModelCheckpoint(tmp_path / "best.npz", save_best_only=True)
    model.fit(X, y, validation_data=(Xv, yv), optimizer=bp.SGD(0.5), epochs=8, batch_size=8,
              verbose=0, callbacks=[cb, bp.LambdaCallback(on_epoch_end=remember)])
    saved = bp.load(tmp_path / "best.npz")
    np.testing.assert_array_equal(saved.get_flat_params(), best[min(best)])
    assert cb.best == min(best)
    assert len(cb.saved) < 8 or sorted(best, reverse=True) == list(best)


def test_checkpoint_mode_max_for_accuracy(tmp_path):
    cb = bp.ModelCheckpoint(tmp_path / "m.npz", monitor="accuracy", save_best_only=True)
    h = _fit(classifier(trained=False), [cb], epochs=6)
    acc = h["accuracy"]
    improved = [e for e in range(len(acc)) if acc[e] > max(acc[:e], default=-1)]
    assert len(cb.saved) == len(improved)


def test_checkpoint_after_a_crash_mid_save_keeps_the_last_whole_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    model = classifier(trained=False)
    _fit(model, [bp.ModelCheckpoint(path)], epochs=1)
    good = path.read_bytes()
    real = np.savez

    def savez(f, **arrays):  # half a file, then the disk is full
        real(f, **dict(list(arrays.items())[:2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.np, "savez", savez)
    with pytest.raises(OSError, match="No space"):
        _fit(model, [bp.ModelCheckpoint(path)], epochs=1)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]
    bp.load(path).predict(data()[0])


def test_checkpoint_rejects_a_name_fit_does_not_log(tmp_path):
    with pytest.raises(ValueError, match="'val_f1'.*Available: loss"):
        _fit(classifier(trained=False),
             [bp.ModelCheckpoint(tmp_path / "m.npz", monitor="val_f1", save_best_only=True)])
    with pytest.raises(ValueError, match="cannot format"):
        _fit(classifier(trained=False), [bp.ModelCheckpoint(tmp_path / "{nope}.npz")])
    with pytest.raises(ValueError, match="mode"):
        bp.ModelCheckpoint(tmp_path / "m.npz", mode="up")


# ---- ReduceLROnPlateau ------------------------------------------------------------------------------


class _Feed(bp.Callback):
    """Replaces the monitored value with a script, and records the rate each epoch trained at."""

    def __init__(self, values):
        self.values, self.rates = list(values), []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(logs["learning_rate"])
        logs["loss"] = self.values[epoch]


def test_plateau_reduces_the_rate_the_next_epoch_trains_at():
    feed = _Feed([1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.5, 0.6, 0.7])
    plateau = bp.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_lr=0.015,
                                   cooldown=2)
    model = classifier(trained=False)
    _fit(model, [feed, plateau], epochs=10, optimizer=bp.SGD(0.1))
    # best 0.5 at epoch 1; epochs 2, 3 do not improve -> 0.05 from epoch 4; the cooldown of 2
    # counts down at epochs 4 and 5 (Keras: epoch 5 already counts, wait 1); epoch 6 improves
    # (0.4); epochs 7, 8 do not -> 0.025 from epoch 9 (without the cooldown: from epoch 6)
    assert feed.rates == [0.1] * 4 + [0.05] * 5 + [0.025]
    assert model.optimizer.learning_rate == 0.025


def test_plateau_stops_at_min_lr_and_the_rate_is_saved(tmp_path):
    feed = _Feed([1.0] * 6)
    model = classifier(trained=False)
    _fit(model, [feed, bp.ReduceLROnPlateau(monitor="loss", factor=0.1, patience=1,
                                            min_lr=0.004)], epochs=6, optimizer=bp.SGD(0.1))
    assert feed.rates == pytest.approx([0.1, 0.1, 0.01, 0.004, 0.004, 0.004])
    model.save(tmp_path / "m.npz")
    assert bp.load(tmp_path / "m.npz").optimizer.learning_rate == pytest.approx(0.004)


def test_plateau_changes_the_training_itself():
    X, y = data(40)
    a, b = classifier(trained=False), classifier(trained=False)
    a.fit(X, y, optimizer=bp.SGD(0.1), epochs=3, batch_size=8, verbose=0)
    b.fit(X, y, optimizer=bp.SGD(0.1), epochs=3, batch_size=8, verbose=0,
          callbacks=[bp.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=10.0)])
    assert b.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.01])  # epoch 0 sets the best
    assert not np.array_equal(a.get_flat_params(), b.get_flat_params())


def test_plateau_refuses_a_schedule_and_bad_arguments():
    with pytest.raises(TypeError, match="constant learning_rate"):
        _fit(classifier(trained=False), [bp.ReduceLROnPlateau()],
             optimizer=bp.SGD(bp.StepDecay(0.1, 2)))
    with pytest.raises(ValueError, match="factor"):
        bp.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="patience"):
        bp.ReduceLROnPlateau(patience=-1)


# ---- CSVLogger ------------------------------------------------------------------------------------


def test_csv_logger_writes_every_epoch(tmp_path):
    path = tmp_path / "log.csv"
    X, y = data(40)
    Xv, yv = data(20, seed=1)
    model = classifier(trained=False)
    h = model.fit(X, y, validation_data=(Xv, yv), epochs=3, batch_size=8, verbose=0,
                  callbacks=[bp.CSVLogger(path)])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    assert [int(r[0]) for r in rows[1:]] == [0, 1, 2]
    for k, key in enumerate(rows[0][1:], start=1):
        assert [float(r[k]) for r in rows[1:]] == h.history[key]  # repr round-trips floats
    model.fit(X, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[bp.CSVLogger(path, append=True, separator=";")])
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and lines[4].startswith("0;") and lines[5].startswith("1;")
    model.fit(X, y, epochs=1, batch_size=8, verbose=0, callbacks=[bp.CSVLogger(path)])
    assert len(path.read_text().splitlines()) == 2  # replaced


# ---- History.plot ---------------------------------------------------------------------------------


def test_history_plot_draws_every_curve(tmp_path):
    X, y = data(40)
    model = classifier(trained=False)
    h = model.fit(X, y, validation_split=0.25, epochs=4, batch_size=8, verbose=0,
                  optimizer=bp.SGD(bp.StepDecay(0.1, 2, 0.5)))
    fig = h.plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "accuracy", "learning rate"]
    loss_ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in loss_ax.get_lines()] == [h["loss"], h["val_loss"]]
    assert list(fig.axes[2].get_lines()[0].get_ydata()) == [0.1, 0.1, 0.05, 0.05]
    assert list(loss_ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4]


def test_history_plot_regression_and_empty():
    model = bp.Sequential([bp.Dense(3, activation="relu"), bp.Dense(1)], seed=0)
    X, _ = data(20)
    h = model.fit(X, X[:, :1], epochs=2, verbose=0)
    assert [ax.get_title() for ax in h.plot().axes] == ["loss", "learning rate"]
    with pytest.raises(ValueError, match="at least one completed epoch"):
        bp.History().plot()


def test_history_plot_without_matplotlib_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r'bp\[plot\]'):
        bp.History().plot()
