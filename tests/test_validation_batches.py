"""fit(validation_data=...) as an iterable of (X_val, y_val[, w_val]) batches (validation_steps
for a generator) or with a memory-mapped X_val read in blocks: the validation loss and accuracy
are evaluate's on all the validation rows at once, and the History is the arrays' History."""

import itertools

import numpy as np
import pytest

import bp
from bp import _mpi, _streaming

from ._reliability import data
from ._rss import peak_growth_mb

X, Y = data(40)
XV, YV = data(30, seed=5)
WV = np.linspace(0.2, 3.0, 30)
# val_loss in parts is a sum over the parts: the same number as one pass to the dtype's rounding
TOL = {"float32": 2e-6, "float64": 1e-13}


def _model(dtype="float32", compiled=True, reg=None):
    m = bp.Sequential([bp.Dense(5, activation="tanh", kernel_regularizer=reg),
                       bp.Dense(3, activation="softmax")], seed=0, dtype=dtype)
    m.build(4)
    m._passes.compiled = compiled
    return m


def _pieces(Xv, yv, w=None, sizes=(7, 7, 7, 9)):
    """A generator of the validation rows in pieces of unequal sizes."""
    start = 0
    for size in sizes:
        part = slice(start, start + size)
        yield (Xv[part], yv[part]) + (() if w is None else (w[part],))
        start += size
    assert start == len(Xv)


class Loader:
    """A re-iterable source of batches, as torch's DataLoader is."""

    def __init__(self, *arrays):
        self.arrays = arrays

    def __iter__(self):
        return _pieces(*self.arrays)


def _same_history(h, expected, dtype):
    """The training numbers bit for bit; the validation ones to the dtype's rounding."""
    assert h.keys() == expected.keys()
    for key in h:
        if key.startswith("val_"):
            np.testing.assert_allclose(h[key], expected[key], rtol=TOL[dtype], atol=0)
        else:
            assert h[key] == expected[key], key


def _fit(data_X, validation_data, dtype="float32", epochs=3, reg=None, **kw):
    m = _model(dtype, reg=reg)
    h = m.fit(data_X, None if not isinstance(data_X, np.ndarray) else Y, epochs=epochs,
              batch_size=8, shuffle=False, verbose=0, optimizer=bp.Adam(0.05),
              validation_data=validation_data, **kw)
    return m, h.history


def _train_batches():
    for s in range(0, 40, 8):
        yield X[s:s + 8], Y[s:s + 8]


class TrainLoader:
    def __iter__(self):
        return _train_batches()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("train", ["arrays", "batches"])
def test_a_loader_in_pieces_gives_the_history_of_the_arrays(dtype, weighted, train):
    w = WV if weighted else None
    arrays = (XV, YV) if w is None else (XV, YV, w)
    train_X = X if train == "arrays" else TrainLoader()
    m1, h1 = _fit(train_X, Loader(XV, YV, w), dtype, reg=bp.l2(0.01))
    m2, h2 = _fit(train_X if train == "arrays" else TrainLoader(), arrays, dtype,
                  reg=bp.l2(0.01))
    np.testing.assert_array_equal(m1.get_flat_params(), m2.get_flat_params())
    _same_history(h1, h2, dtype)
    assert set(h1) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}


@pytest.mark.parametrize("compiled", [True, False])
def test_val_loss_is_evaluate_on_the_concatenated_rows(compiled):
    seen = []
    m = _model("float64", compiled, reg=bp.l1_l2(0.01, 0.02))
    rec = bp.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(
        (logs["val_loss"], logs["val_accuracy"], m.evaluate(XV, YV, sample_weight=WV))))
    m.fit(X, Y, epochs=3, batch_size=8, verbose=0, callbacks=[rec],
          validation_data=Loader(XV, YV, WV))
    assert len(seen) == 3
    for val_loss, val_acc, ev in seen:
        assert val_loss == pytest.approx(ev["loss"], rel=1e-13)
        assert val_acc == pytest.approx(ev["accuracy"], rel=1e-13)


def test_mse_reports_no_val_accuracy():
    m = bp.Sequential([bp.Dense(4, activation="tanh"), bp.Dense(2)], seed=0, dtype="float64")
    T, TV = X[:, :2] * 0.5, XV[:, :2] * 0.5
    h = m.fit(X, T, epochs=2, batch_size=8, verbose=0, validation_data=Loader(XV, TV))
    assert "val_accuracy" not in h.history
    assert h.history["val_loss"][-1] == pytest.approx(m.evaluate(XV, TV)["loss"], rel=1e-13)


def test_a_generator_needs_validation_steps_for_several_epochs_and_goes_on():
    m = _model()
    before = m.get_flat_params()
    with pytest.raises(ValueError, match=r"validation_data is a generator, which runs once: give "
                                         r"validation_steps .* for epochs=2"):
        m.fit(X, Y, epochs=2, verbose=0, validation_data=_pieces(XV, YV))
    np.testing.assert_array_equal(m.get_flat_params(), before)
    # one epoch: one pass of the generator
    _, h1 = _fit(X, _pieces(XV, YV), epochs=1)
    _, h2 = _fit(X, (XV, YV), epochs=1)
    _same_history(h1, h2, "float32")
    # an endless generator, validation_steps batches per evaluation, going on where it stopped
    halves = [(XV[:15], YV[:15]), (XV[15:], YV[15:])]
    _, h = _fit(X, itertools.cycle(halves), epochs=4, validation_steps=1)
    _, first = _fit(X, (XV[:15], YV[:15]), epochs=4)
    _, second = _fit(X, (XV[15:], YV[15:]), epochs=4)
    expected = [(first if epoch % 2 == 0 else second)["val_loss"][epoch] for epoch in range(4)]
    np.testing.assert_allclose(h["val_loss"], expected, rtol=TOL["float32"])
    assert h["loss"] == first["loss"]


def test_a_loader_starts_again_at_each_evaluation_with_validation_steps():
    _, h = _fit(X, Loader(XV, YV), validation_steps=2)
    _, expected = _fit(X, (XV[:14], YV[:14]))
    _same_history(h, expected, "float32")


def test_bad_uses_are_refused_before_anything_changes():
    m = _model()
    before = m.get_flat_params()
    cases = [
        (dict(validation_data=(XV, YV), validation_steps=2), ValueError,
         r"validation_steps is for validation_data given as an iterable of batches"),
        (dict(validation_steps=2), ValueError, r"validation_steps needs validation_data"),
        (dict(validation_data=Loader(XV, YV), validation_steps=0), ValueError,
         r"validation_steps must be a positive integer. Received: validation_steps=0"),
        (dict(validation_data=iter([])), ValueError, r"validation_data gave no batch"),
        (dict(validation_data=iter([XV])), TypeError,
         r"validation batch 0 must be \(X_val, y_val\) or \(X_val, y_val, w_val\). "
         r"Received: ndarray"),
        (dict(validation_data=iter([(XV[:, :3], YV)])), ValueError,
         r"validation batch 0: X_val must have 4 features .*Received: X_val with shape \(30, 3\)"),
        (dict(validation_data=iter([(XV.astype(str), YV)])), TypeError,
         r"validation batch 0: X_val must be .*Received"),
        (dict(validation_data=iter([(XV, YV + 3)])), ValueError,
         r"validation batch 0: cross_entropy labels must be integers in \[0, 3\) .*Received: 3 "
         r"at index 0 of y_val"),
        (dict(validation_data=iter([(XV, YV, -WV)])), ValueError,
         r"validation batch 0: sample_weight must be non-negative"),
        (dict(validation_data=XV), TypeError,
         r"validation_data must be \(X_val, y_val\) or \(X_val, y_val, sample_weight_val\), "
         r"or an iterable of such batches .*Received: ndarray"),
        (dict(validation_data=list(_pieces(XV, YV))), TypeError,
         r"a list of batches: iter\(batches\)\). Received: list of 4"),
    ]
    for kw, error, match in cases:
        with pytest.raises(error, match=match):
            m.fit(X, Y, epochs=1, verbose=0, **kw)
    np.testing.assert_array_equal(m.get_flat_params(), before)


@pytest.mark.parametrize("bad, error, match", [
    ((XV[:, :3], YV), ValueError, r"validation batch 1: X_val must have 4 features"),
    ((XV.astype(complex), YV), TypeError, r"validation batch 1: X_val .*complex"),
    ((XV, np.full(30, 7)), ValueError, r"validation batch 1: .*in \[0, 3\) .*Received: 7 .*of y_val"),
])
def test_a_bad_later_batch_is_named_when_it_comes(bad, error, match):
    m = _model()
    with pytest.raises(error, match=match):
        m.fit(X, Y, epochs=1, verbose=0, validation_data=iter([(XV, YV), bad]))


def test_validation_batches_that_run_out_are_named():
    m = _model()
    with pytest.raises(ValueError, match=r"the validation batches ran out after 4 of "
                                         r"validation_steps=5"):
        m.fit(X, Y, epochs=1, verbose=0, validation_data=_pieces(XV, YV), validation_steps=5)


def test_callbacks_that_watch_val_loss_see_what_the_arrays_give(tmp_path):
    runs = []
    for i, val in enumerate([Loader(XV, YV), (XV, YV)]):
        path = tmp_path / f"best{i}.bp"
        callbacks = [bp.EarlyStopping(monitor="val_loss", patience=2),
                     bp.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1),
                     bp.ModelCheckpoint(str(path), monitor="val_loss", save_best_only=True)]
        m = _model("float64")  # (val_loss in parts and at once differ by ~1e-16)
        h = m.fit(X, Y, epochs=30, batch_size=8, verbose=0, optimizer=bp.SGD(2.0),
                  validation_data=val, callbacks=callbacks)
        runs.append((h, m.get_flat_params(), bp.load(path).get_flat_params()))
    (h1, p1, best1), (h2, p2, best2) = runs
    assert h1.stopped == h2.stopped == "early_stopping"  # both, at the same epoch
    assert len(h1.history["loss"]) == len(h2.history["loss"]) < 30
    assert len(set(h1.history["learning_rate"])) > 1  # the plateau lowered the rate
    _same_history(h1.history, h2.history, "float64")
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(best1, best2)


def test_data_parallel_fit_refuses_validation_in_parts(monkeypatch, tmp_path):
    class FakeComm:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2

    monkeypatch.setattr(_mpi, "check_world", lambda comm=None: None)
    monkeypatch.setattr(_mpi, "rank_threads", lambda comm: None)
    monkeypatch.setattr(_mpi, "check_comm", lambda comm: comm)  # (a fake, not an MPI.Comm)

    class Alone:  # the ranks' agreement, for one process: nothing to exchange
        def __init__(self, comm):
            pass

        def check(self, settings):
            pass

        def fail(self, exc):
            pass

    monkeypatch.setattr(_mpi, "Agreement", Alone)
    np.save(tmp_path / "XV.npy", XV.astype(np.float32))
    XVm = np.load(tmp_path / "XV.npy", mmap_mode="r")
    m = _model()
    before = m.get_flat_params()
    with pytest.raises(ValueError, match=r"fit\(comm=...\) evaluates in-memory validation "
                                         r"arrays .*Received: an iterable of validation batches"):
        m.fit(X, Y, verbose=0, comm=FakeComm(), validation_data=Loader(XV, YV))
    with pytest.raises(ValueError, match=r"Received: a memory-mapped X_val"):
        m.fit(X, Y, verbose=0, comm=FakeComm(), validation_data=(XVm, YV))
    np.testing.assert_array_equal(m.get_flat_params(), before)


# ---- a memory-mapped X_val: read in blocks ----------------------------------------------------
def test_a_memmap_validation_set_is_read_in_blocks_and_gives_the_arrays_history(
        tmp_path, monkeypatch):
    monkeypatch.setattr(_streaming, "BLOCK_BYTES", 8 * 4 * 4)  # 8 rows of 4 float32: 4 blocks
    np.save(tmp_path / "XV.npy", XV.astype(np.float32))
    XVm = np.load(tmp_path / "XV.npy", mmap_mode="r")
    reads = []
    real = _streaming.Blocks.read
    monkeypatch.setattr(_streaming.Blocks, "read",
                        lambda self, b, f: reads.append(b) or real(self, b, f))
    _, h1 = _fit(X, (XVm, YV, WV))
    _, h2 = _fit(X, (XV.astype(np.float32), YV, WV))
    _same_history(h1, h2, "float32")
    # the check (one pass) and one pass per epoch's evaluation, block by block
    assert reads == list(range(4)) * 4


def test_a_memmap_validation_set_is_checked_before_training(tmp_path):
    bad = XV.copy()
    bad[17, 2] = np.nan
    np.save(tmp_path / "XV.npy", bad)
    XVm = np.load(tmp_path / "XV.npy", mmap_mode="r")
    m = _model("float64")
    before = m.get_flat_params()
    with pytest.raises(ValueError, match=r"X_val must contain only finite values. Received: nan "
                                         r"at row, column \(17, 2\)"):
        m.fit(X, Y, verbose=0, validation_data=(XVm, YV))
    np.testing.assert_array_equal(m.get_flat_params(), before)
    unbuilt = bp.Sequential([bp.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match=r"X_val must have 3 features, as X has. Received: "
                                         r"X_val with shape \(30, 4\)"):
        unbuilt.fit(X[:, :3], Y, verbose=0, validation_data=(XVm, YV))
    assert not unbuilt.built


def test_resident_memory_does_not_grow_with_the_validation_file(tmp_path):
    n, d = 160_000, 128  # 82 MB of float32, 20 blocks of 4 MB
    before, after = peak_growth_mb(tmp_path / "val.npy", n, d, """
        X_val = np.load(path, mmap_mode="r")
        y_val = np.arange(n) % 2
        X, y = rng.standard_normal((4096, d)).astype(np.float32), np.arange(4096) % 2
        model = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(2, activation="softmax")],
                              seed=0)
        model.fit(X, y, epochs=1, batch_size=512, verbose=0,
                  validation_data=(X[:100], y[:100]))
        before = peak_mb()
        model.fit(X, y, epochs=2, batch_size=512, verbose=0, validation_data=(X_val, y_val))
        print(before, peak_mb())
    """)
    # a block, the outputs of its rows and y_val (1.3 MB): a few MB, not the 78 MB file
    assert after - before < 24, (before, after)
