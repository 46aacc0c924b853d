"""Saving, loading and pickling: the same predictions bit for bit, and training that goes on
exactly as if it had never been interrupted (weights, optimizer state and the shuffling
generator all come back)."""

import copy
import pickle

import numpy as np
import pytest

import bp

DTYPES = [np.float32, np.float64]


def blobs(n=40, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return rng.standard_normal((k, d))[y] * 2 + rng.standard_normal((n, d)), y


def model_of(dtype, seed=0):
    return bp.Sequential([bp.Dense(8, activation="gelu", name="hidden"),
                          bp.Dense(6, activation="leaky_relu", alpha=0.2, use_bias=False),
                          bp.Dense(3, activation="softmax")], dtype=dtype, seed=seed)


OPTIMIZERS = {
    "adam": lambda: bp.Adam(0.01, global_clipnorm=1.0),
    "sgd": lambda: bp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adamw": lambda: bp.AdamW(0.01),
}


def fit(model, X, y, epochs, optimizer=None):
    return model.fit(X, y, epochs=epochs, batch_size=8, optimizer=optimizer, verbose=0)


def same_model(a, b):
    assert repr(a) == repr(b)
    assert a.dtype == b.dtype and a.seed == b.seed and a.loss == b.loss
    np.testing.assert_array_equal(a.get_flat_params(), b.get_flat_params())
    assert a.get_flat_params().dtype == b.get_flat_params().dtype
    for la, lb in zip(a, b):
        assert la.get_config() == lb.get_config()
    oa, ob = a.optimizer, b.optimizer
    assert type(oa) is type(ob) and oa.get_config() == ob.get_config()
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_then_load_predicts_identically(dtype, tmp_path):
    X, y = blobs()
    model = model_of(dtype)
    fit(model, X, y, 2, bp.Adam(0.01))
    path = tmp_path / "model.npz"
    model.save(path)
    again = bp.load(path)
    same_model(model, again)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert again.evaluate(X, y) == model.evaluate(X, y)
    # a plain .npz, readable without pickle; save leaves no temporary file behind
    with np.load(path, allow_pickle=False) as data:
        assert {"bp_format", "config", "params", "checksum", "opt_m", "opt_v"} <= set(data.files)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    # str paths work as well as pathlib ones
    model.save(str(tmp_path / "again.npz"))
    np.testing.assert_array_equal(bp.load(str(tmp_path / "again.npz")).predict(X), model.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_training_continues_after_load_as_if_never_interrupted(opt, dtype, tmp_path):
    # fit(2) + save + load + fit(2) == fit(4): the weights, the optimizer's moments and step count,
    # and the generator that shuffles every epoch must all survive the file.
    X, y = blobs()
    straight = model_of(dtype)
    fit(straight, X, y, 4, OPTIMIZERS[opt]())
    first = model_of(dtype)
    fit(first, X, y, 2, OPTIMIZERS[opt]())
    first.save(tmp_path / "half.npz")
    resumed = bp.load(tmp_path / "half.npz")
    fit(resumed, X, y, 2)  # its own optimizer, as saved
    np.testing.assert_array_equal(resumed.get_flat_params(), straight.get_flat_params())
    same_model(resumed, straight)


def test_loading_twice_gives_the_same_continuation(tmp_path):
    X, y = blobs()
    model = model_of(np.float64)
    fit(model, X, y, 1, bp.SGD(0.1, momentum=0.9))
    model.save(tmp_path / "m.npz")
    a, b = bp.load(tmp_path / "m.npz"), bp.load(tmp_path / "m.npz")
    fit(a, X, y, 2)
    fit(b, X, y, 2)
    np.testing.assert_array_equal(a.get_flat_params(), b.get_flat_params())


def test_a_schedule_is_saved_as_the_rate_in_force(tmp_path):
    X, y = blobs()
    model = model_of(np.float64)
    fit(model, X, y, 3, bp.SGD(bp.StepDecay(0.1, step_size=1, gamma=0.5)))
    model.save(tmp_path / "m.npz")
    loaded = bp.load(tmp_path / "m.npz")
    assert loaded.optimizer.learning_rate == pytest.approx(0.025)  # epoch 2's rate
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_a_plain_function_schedule_is_saved_as_the_rate_in_force(tmp_path):
    # a function cannot go into the pickle-free file: its value at the last epoch does
    X, y = blobs()
    model = model_of(np.float64)
    fit(model, X, y, 3, bp.SGD(lambda epoch: 0.1 / (1 + epoch), momentum=0.5))
    model.save(tmp_path / "m.npz")
    loaded = bp.load(tmp_path / "m.npz")
    assert type(loaded.optimizer.learning_rate) is float
    assert loaded.optimizer.learning_rate == pytest.approx(0.1 / 3)  # epoch 2's rate
    assert loaded.optimizer.get_config() == {**model.optimizer.get_config(),
                                             "learning_rate": loaded.optimizer.learning_rate}
    assert loaded.optimizer.iterations == model.optimizer.iterations == 15
    np.testing.assert_array_equal(loaded.optimizer.state_dict()["velocity"],
                                  model.optimizer.state_dict()["velocity"])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_built_but_untrained_model_round_trips(dtype, tmp_path):
    X, y = blobs()
    model = model_of(dtype).build(X.shape[1])
    model.save(tmp_path / "m.npz")
    loaded = bp.load(tmp_path / "m.npz")
    assert loaded.built and loaded.optimizer is None and loaded.loss is None
    assert repr(loaded) == repr(model) and loaded.dtype == model.dtype
    assert loaded.get_flat_params().tobytes() == model.get_flat_params().tobytes()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # the seeded generator came back too: both train the same from here
    fit(model, X, y, 2, bp.Adam(0.01))
    fit(loaded, X, y, 2, bp.Adam(0.01))
    assert loaded.get_flat_params().tobytes() == model.get_flat_params().tobytes()


def test_a_corrupted_file_is_refused(tmp_path):
    X, y = blobs()
    model = model_of(np.float32)
    fit(model, X, y, 1)
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["params"] = arrays["params"].copy()
    arrays["params"][0] += 1
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"is corrupted: its checksum does not match its contents"):
        bp.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"is not a (readable )?bp model file"):
        bp.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        bp.load(tmp_path / "missing.npz")


# ---- pickling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_pickle_round_trip(dtype, clone):
    X, y = blobs()
    model = model_of(dtype)
    fit(model, X, y, 2, bp.Adam(0.01))
    model.gradients(X[:4], y[:4])
    again = pickle.loads(pickle.dumps(model)) if clone == "pickle" else copy.deepcopy(model)
    same_model(model, again)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    # the copy owns its parameters, and its layers are views of them
    again[0].W = np.zeros_like(again[0].W)
    assert not np.array_equal(model[0].W, again[0].W)
    np.testing.assert_array_equal(again.get_flat_params()[:again[0].W.size], 0)
    # training goes on identically (the shuffling generator is pickled too)
    twin = pickle.loads(pickle.dumps(model))
    fit(model, X, y, 2)
    fit(twin, X, y, 2)
    np.testing.assert_array_equal(twin.get_flat_params(), model.get_flat_params())


def test_pickle_an_unbuilt_model():
    model = model_of(np.float32, seed=3)
    again = pickle.loads(pickle.dumps(model))
    assert not again.built and repr(again) == repr(model)
    X, _ = blobs()
    np.testing.assert_array_equal(again.predict(X), model.predict(X))  # the same seeded weights
