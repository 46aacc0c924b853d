"""fit on a memory-mapped X: read in blocks (bp/_streaming.py), the same model as the in-memory
array on the same row order, and resident memory that does not grow with the file."""

import numpy as np
import pytest

import bp
from bp import _streaming

from ._rss import peak_growth_mb


def _file(tmp_path, n=1000, d=8, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    path = tmp_path / "X.npy"
    np.save(path, X)
    return np.load(path, mmap_mode="r"), X, y


def _model(seed=0, dtype="float32"):
    return bp.Sequential([bp.Dense(6, activation="tanh"), bp.Dense(3, activation="softmax")],
                         seed=seed, dtype=dtype)


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(_streaming, "BLOCK_BYTES", 96 * 8 * 4)  # 96 rows of 8 float32


def test_unshuffled_stream_is_the_in_memory_fit_bit_for_bit(tmp_path, small_blocks, compiled):
    Xm, X, y = _file(tmp_path)
    assert _streaming.streamable(Xm) and not _streaming.streamable(X)
    runs = []
    for data in (Xm, X):
        m = _model()
        m.build(8)
        h = m.fit(data, y, epochs=2, batch_size=8, accumulate=2, shuffle=False, verbose=0,
                  optimizer=bp.Adam(1e-2))
        runs.append((m.get_flat_params(), h.history))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_shuffled_stream_is_the_in_memory_fit_on_its_block_order(tmp_path, small_blocks,
                                                                 monkeypatch):
    Xm, X, y = _file(tmp_path)
    seen = []
    real = _streaming.Blocks.parts

    def parts(self, rng, shuffle):
        for Xb, start, order in real(self, rng, shuffle):
            seen.append(start + order)
            yield Xb, start, order

    monkeypatch.setattr(_streaming.Blocks, "parts", parts)
    m = _model()
    m.fit(Xm, y, epochs=1, batch_size=16, shuffle=True, verbose=0, optimizer=bp.SGD(0.1))
    rows = np.concatenate(seen)
    assert sorted(rows) == list(range(1000))  # every row once
    starts = [int(s.min()) // 96 for s in seen]
    assert starts[-1] == 10 and sorted(starts) == list(range(11))  # the tail block last
    assert starts[:-1] != list(range(10))  # the full blocks shuffled
    twin = _model()
    twin.fit(X[rows], y[rows], epochs=1, batch_size=16, shuffle=False, verbose=0,
             optimizer=bp.SGD(0.1))
    np.testing.assert_array_equal(m.get_flat_params(), twin.get_flat_params())


def test_stream_checks_every_block_before_training(tmp_path, small_blocks):
    Xm, X, y = _file(tmp_path)
    X[777, 3] = np.nan
    np.save(tmp_path / "bad.npy", X)
    bad = np.load(tmp_path / "bad.npy", mmap_mode="r")
    m = _model()
    with pytest.raises(ValueError, match=r"X must contain only finite values\. Received: nan at "
                                         r"row, column \(777, 3\)"):
        m.fit(bad, y, epochs=1, verbose=0)
    assert not m.built
    with pytest.raises(ValueError, match="give validation_data, not validation_split"):
        m.fit(Xm, y, validation_split=0.2, verbose=0)
    h = m.fit(Xm, y, validation_data=(X[:100], y[:100]), class_weight="balanced", epochs=1,
              verbose=0)
    assert "val_loss" in h.history


def test_float64_file_into_a_float32_model(tmp_path, small_blocks):
    Xm, X, y = _file(tmp_path, dtype=np.float64)
    a, b = _model(), _model()
    a.fit(Xm, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    b.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(a.get_flat_params(), b.get_flat_params())


@pytest.mark.slow
def test_resident_memory_does_not_grow_with_the_file(tmp_path):
    n, d = 240_000, 128  # 123 MB of float32, 30 blocks of 4 MB
    before, after = peak_growth_mb(tmp_path / "big.npy", n, d, """
        X = np.load(path, mmap_mode="r")
        y = (np.arange(n) % 2)
        model = bp.Sequential([bp.Dense(4, activation="relu"), bp.Dense(2, activation="softmax")],
                              seed=0)
        model.fit(np.asarray(X[:4096]), y[:4096], epochs=1, batch_size=512, verbose=0)  # warm up
        before = peak_mb()
        model.fit(X, y, epochs=2, batch_size=512, verbose=0)
        print(before, peak_mb())
    """)
    file_mb = n * d * 4 / 2**20
    # the block, its copy and the workspace: a few 4 MB blocks, not the 117 MB file
    assert after - before < 32, (before, after, file_mb)
