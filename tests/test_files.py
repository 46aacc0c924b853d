"""Files: save is atomic (a failure at any point leaves the old file whole and no temporary file
behind); load never unpickles and answers every truncated, corrupted, wrong-version or foreign file
with a ValueError that names the file, never another exception and never a half-built model.
Pickling (and deepcopy) keep the optimizer state and the seeded generator: the copy trains on
exactly like the original."""

import copy
import glob
import json
import os
import pickle

import numpy as np
import pytest

import bp
from bp import _io

try:  # tests/ as a package (it has an __init__.py) or as a plain directory on sys.path
    from ._reliability import classifier, data, params_equal
except ImportError:
    from _reliability import classifier, data, params_equal

X0, y0 = data()
BAD_FILE = r"is not a bp model file|is not a readable bp model file|is corrupted|holds an invalid bp model|has bp file format version"


def trained(epochs=2):
    model = classifier()
    model.fit(X0, y0, optimizer=bp.Adam(1e-2), epochs=epochs, batch_size=4, verbose=0)
    return model


def assert_same_model(a, b):
    assert params_equal(a, b)
    assert [L.get_config() for L in a.layers] == [L.get_config() for L in b.layers]
    assert a.dtype == b.dtype and a.loss == b.loss and a.input_dim == b.input_dim
    assert type(a.optimizer) is type(b.optimizer)
    assert a.optimizer.get_config() == b.optimizer.get_config()
    assert a.optimizer.iterations == b.optimizer.iterations
    assert a.optimizer._state.keys() == b.optimizer._state.keys()
    for k in a.optimizer._state:
        assert a.optimizer._state[k].tobytes() == b.optimizer._state[k].tobytes()


def temp_files(directory):
    return glob.glob(os.path.join(directory, ".bp-save-*"))


@pytest.fixture
def saved(tmp_path):
    model = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path, path.read_bytes()


# ---- atomic save --------------------------------------------------------------------------------


def _savez_that_fails(exc):
    real = np.savez

    def savez(f, **arrays):
        real(f, **{k: v for k, v in list(arrays.items())[:2]})  # half a file, then the fault
        raise exc

    return savez


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_failed_save_leaves_the_old_file_whole(saved, monkeypatch, exc):
    model, path, old_bytes = saved
    model.fit(X0, y0, epochs=1, verbose=0)  # something new to save
    monkeypatch.setattr(_io.np, "savez", _savez_that_fails(exc))
    with pytest.raises(type(exc)):
        model.save(path)
    assert path.read_bytes() == old_bytes
    assert temp_files(path.parent) == []
    monkeypatch.undo()
    assert_same_model(bp.load(path), bp.load(path))


@pytest.mark.parametrize("stage", ["fsync", "chmod", "replace"])
def test_save_failing_late_leaves_the_old_file_whole(saved, monkeypatch, stage):
    model, path, old_bytes = saved
    model.fit(X0, y0, epochs=1, verbose=0)

    def fail(*args, **kwargs):
        raise OSError(5, f"Input/output error in {stage}")

    monkeypatch.setattr(_io.os, stage, fail)
    with pytest.raises(OSError, match=stage):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert temp_files(path.parent) == []


def test_failed_first_save_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_io.np, "savez", _savez_that_fails(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        trained().save(tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


def test_save_to_a_directory_is_refused_cleanly(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError):
        trained().save(tmp_path / "adir")
    assert temp_files(tmp_path) == []


def test_saved_file_mode_follows_umask_and_keeps_an_existing_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        model = trained()
        model.save(tmp_path / "new.npz")
        assert os.stat(tmp_path / "new.npz").st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "new.npz", 0o640)
        model.save(tmp_path / "new.npz")
        assert os.stat(tmp_path / "new.npz").st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


# ---- the round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [lambda: bp.SGD(0.1, momentum=0.9, nesterov=True),
                                       lambda: bp.Adam(1e-2), lambda: bp.AdamW(1e-2, clip_norm=1.0)],
                         ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_trains_on_identically(tmp_path, optimizer, dtype):
    model = classifier(dtype=dtype, trained=False)
    model.fit(X0, y0, optimizer=optimizer(), epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "m.npz")
    again = bp.load(tmp_path / "m.npz")
    assert_same_model(model, again)
    # the generator is not in the file, so compare training without shuffling
    for m in (model, again):
        m.fit(X0, y0, epochs=2, batch_size=4, shuffle=False, verbose=0)
    assert_same_model(model, again)


def test_unbuilt_model_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match=r"the model is not built yet"):
        classifier(trained=False).save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# ---- files that are not (whole) bp models -----------------------------------------------------


@pytest.mark.parametrize("keep", [0, 1, 3, 4, 30, 100, 0.5, -200, -22, -1])
def test_truncated_file(saved, keep):
    _, path, data_ = saved
    n = int(len(data_) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data_) + keep)
    path.write_bytes(data_[:n])
    with pytest.raises(ValueError, match=BAD_FILE) as info:
        bp.load(path)
    assert str(path) in str(info.value)


def test_every_corrupted_byte_is_caught_or_harmless(saved, request):
    """Flip each byte of a saved model in turn (every 3rd by default; BP_THOROUGH=1 for all):
    load raises the ValueError, or, where the byte was zip or .npy metadata that does not
    matter, gives the model back bit for bit. Never another exception."""
    model, path, data_ = saved
    step = 1 if os.environ.get("BP_THOROUGH") else 3
    caught = harmless = 0
    for pos in range(0, len(data_), step):
        bad = bytearray(data_)
        bad[pos] ^= 0xFF
        path.write_bytes(bytes(bad))
        try:
            loaded = bp.load(path)
        except ValueError as exc:
            assert str(path) in str(exc)
            caught += 1
        else:
            assert_same_model(model, loaded)
            harmless += 1
    assert caught > harmless > 0  # both kinds occur; most bytes matter


def test_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("not a model\n")
    with pytest.raises(ValueError, match=r"is not a bp model file: expected an \.npz \(zip\) archive "
                                         r"written by Sequential\.save\. Received: a file starting with b'not '"):
        bp.load(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"Received: an empty file"):
        bp.load(path)


def test_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.arange(5.0))
    with pytest.raises(ValueError, match=r"is not a bp model file: expected an \.npz .* Received: a file starting with b'\\x93NUM'"):
        bp.load(path)


def test_directory(tmp_path):
    with pytest.raises(ValueError, match=r"cannot be read as a bp model file"):
        bp.load(tmp_path)


def test_foreign_npz(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones(3), bias=np.zeros(1))
    with pytest.raises(ValueError, match=r"is not a bp model file: no 'bp_format' entry"):
        bp.load(path)


SIDE_EFFECT = []


class Exploit:
    """Unpickling this runs code: it must never happen."""

    def __reduce__(self):
        return (SIDE_EFFECT.append, ("unpickled!",))


def test_npz_holding_a_pickle_is_never_unpickled(saved):
    _, path, _ = saved
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["config"] = np.array([Exploit()], dtype=object)
    np.savez(path, **arrays)
    SIDE_EFFECT.clear()
    with pytest.raises(ValueError, match=r"is not a readable bp model file \(\.npz\): Object arrays "
                                         r"cannot be loaded when allow_pickle=False"):
        bp.load(path)
    assert SIDE_EFFECT == []


def test_pickle_file_is_never_unpickled(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(Exploit()))
    SIDE_EFFECT.clear()
    with pytest.raises(ValueError, match=r"is not a bp model file: expected an \.npz"):
        bp.load(path)
    assert SIDE_EFFECT == []


def _rewrite(path, edit, fix_checksum=True):
    """Edit the arrays of a saved model; recompute the checksum (a crafted file) unless told not to."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    edit(arrays)
    if fix_checksum and "checksum" in arrays:
        arrays["checksum"] = _io._checksum(arrays)
    np.savez(path, **arrays)


def _config_edit(change):
    def edit(arrays):
        config = json.loads(arrays["config"].tobytes())
        config = change(config)
        arrays["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    return edit


CRAFTED = [
    ("newer-version", lambda a: a.update(bp_format=np.array([3])),
     r"has bp file format version 3; this bp reads versions 1 to 2 \(a newer bp wrote it"),
    ("older-version", lambda a: a.update(bp_format=np.array([0])),
     r"has bp file format version 0; this bp reads versions 1 to 2$"),
    ("version-empty", lambda a: a.update(bp_format=np.array([], np.int64)),
     r"'bp_format' must be one integer\. Received: dtype int64, shape \(0,\)"),
    ("version-text", lambda a: a.update(bp_format=np.array(["1"])),
     r"'bp_format' must be one integer\. Received: dtype <U1, shape \(1,\)"),
    ("no-params", lambda a: a.pop("params"), r"is not a complete bp model file: no 'params' entry"),
    ("no-checksum", lambda a: a.pop("checksum"), r"is not a complete bp model file: no 'checksum' entry"),
    ("params-too-short", lambda a: a.update(params=a["params"][:-1]),
     r"holds an invalid bp model: params have shape \(42,\) and dtype float32; the architecture needs \(43,\) float32"),
    ("params-float64", lambda a: a.update(params=a["params"].astype(np.float64)),
     r"holds an invalid bp model: params have shape \(43,\) and dtype float64"),
    ("opt-state-shape", lambda a: a.update(opt_m=a["opt_m"][:5]),
     r"holds an invalid bp model: optimizer state 'm' has shape \(5,\)"),
    ("config-not-json", lambda a: a.update(config=np.frombuffer(b"{nope", np.uint8)),
     r"holds an invalid bp model: Expecting property name"),
    ("config-not-utf8", lambda a: a.update(config=np.frombuffer(b"\xff\xfe", np.uint8)),
     r"holds an invalid bp model: 'utf-8' codec can't decode"),
    ("config-a-list", _config_edit(lambda c: [c]), r"holds an invalid bp model"),
    ("layer-units-0", _config_edit(lambda c: {**c, "layers": [{**c["layers"][0], "units": 0}, c["layers"][1]]}),
     r"holds an invalid bp model: Dense units must be a positive integer\. Received: units=0"),
    ("layer-unknown-key", _config_edit(lambda c: {**c, "layers": [{**c["layers"][0], "activity_regularizer": 0.5}, c["layers"][1]]}),
     r"holds an invalid bp model: .*unexpected keyword argument 'activity_regularizer'"),
    ("layer-dropout-rate-2", _config_edit(lambda c: {**c, "layers": [{**c["layers"][0], "dropout": {"rate": 2.0, "seed": 1}}, c["layers"][1]]}),
     r"holds an invalid bp model: Dropout rate must be in \[0, 1\)\. Received: rate=2\.0"),
    ("layer-dropout-not-a-dict", _config_edit(lambda c: {**c, "layers": [{**c["layers"][0], "dropout": 0.5}, c["layers"][1]]}),
     r"holds an invalid bp model"),
    ("layer-regularizer-negative", _config_edit(lambda c: {**c, "layers": [{**c["layers"][0], "kernel_regularizer": {"l1": 0.0, "l2": -1.0}}, c["layers"][1]]}),
     r"holds an invalid bp model: l2 must be"),
    ("dtype-float16", _config_edit(lambda c: {**c, "dtype": "float16"}),
     r"holds an invalid bp model: dtype must be float32 or float64\. Received: dtype='float16'"),
    ("optimizer-unknown", _config_edit(lambda c: {**c, "optimizer": {**c["optimizer"], "class": "LBFGS"}}),
     r"holds an invalid bp model: 'LBFGS'"),
    ("optimizer-lr-negative", _config_edit(lambda c: {**c, "optimizer": {**c["optimizer"], "config": {**c["optimizer"]["config"], "learning_rate": -1}}}),
     r"holds an invalid bp model: learning_rate must be a finite number in \(0\.0, inf\)\. Received: learning_rate=-1"),
]


@pytest.mark.parametrize("edit, regex", [pytest.param(e, r, id=i) for i, e, r in CRAFTED])
def test_crafted_file_with_a_valid_checksum(saved, edit, regex):
    _, path, _ = saved
    _rewrite(path, edit)
    with pytest.raises(ValueError, match=regex):
        bp.load(path)


def test_edited_contents_fail_the_checksum(saved):
    _, path, _ = saved
    _rewrite(path, lambda a: a.update(params=a["params"] + np.float32(1e-3)), fix_checksum=False)
    with pytest.raises(ValueError, match=r"is corrupted: its checksum does not match its contents"):
        bp.load(path)


# ---- pickling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_pickle_round_trip_with_optimizer_state(how):
    model = trained()
    clone = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    assert_same_model(model, clone)
    np.testing.assert_array_equal(clone.predict(X0), model.predict(X0))
    # the seeded generator travels too: shuffled training goes on identically
    for m in (model, clone):
        m.fit(X0, y0, epochs=3, batch_size=4, verbose=0)
    assert_same_model(model, clone)
    # and the two are independent: training one leaves the other alone
    before = clone.get_flat_params()
    model.fit(X0, y0, epochs=1, verbose=0)
    assert clone.get_flat_params().tobytes() == before.tobytes()
    assert clone.layers[0].W.base is not None and np.shares_memory(clone.layers[0].W, clone._params)


def test_pickle_unbuilt_model():
    model = classifier(trained=False)
    clone = pickle.loads(pickle.dumps(model))
    assert not clone.built
    for m in (model, clone):
        m.fit(X0, y0, epochs=2, batch_size=4, verbose=0)
    assert params_equal(model, clone)


def test_pickled_model_can_be_fitted_and_refuses_concurrent_fits():
    clone = pickle.loads(pickle.dumps(trained()))
    assert clone._fit_lock.acquire(blocking=False)
    clone._fit_lock.release()
    clone.fit(X0, y0, epochs=1, verbose=0)
