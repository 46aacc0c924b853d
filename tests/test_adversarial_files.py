"""Files under attack (issue 22): crafted model files with valid checksums, a zip bomb, custom
optimizers, and save onto what is not a regular file. Everything is written into tmp_path; a
device is never written to (a FIFO made with os.mkfifo stands for one, and a character device is
only stat-ed through a mock)."""

import json
import os
import stat
import struct
import tracemalloc
import zlib
from unittest import mock

import numpy as np
import pytest

import bp
from bp import _io

try:
    from . import _reliability as R
except ImportError:
    import _reliability as R


@pytest.fixture
def saved(tmp_path):
    model = R.classifier()
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path


def _craft(path, edit_config=None, edit_arrays=None):
    """Rewrite a saved model with an edited config or arrays, and a valid checksum."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    if edit_config is not None:
        config = edit_config(json.loads(arrays["config"].tobytes()))
        arrays["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    if edit_arrays is not None:
        edit_arrays(arrays)
    arrays["checksum"] = _io._checksum(arrays)
    np.savez(path, **arrays)


def _nan_params(a):
    a["params"] = a["params"].copy()
    a["params"][5] = np.nan


def _inf_moment(a):
    a["opt_v"] = a["opt_v"].copy()
    a["opt_v"][0] = np.inf


def _deep(arrays):
    """A config whose loss is a list nested 100000 deep (json.dumps could not even write it)."""
    text = arrays["config"].tobytes().decode()
    text = text[:-1] + ', "nested": ' + "[" * 100_000 + "]" * 100_000 + "}"
    arrays["config"] = np.frombuffer(text.encode(), np.uint8)


CRAFTED = [
    ("nan-params", None, _nan_params,
     r"holds an invalid bp model: params must contain only finite values\. Received: nan at index \(5\)"),
    ("inf-moment", None, _inf_moment, r"opt_v must contain only finite values\. Received: inf"),
    ("unknown-loss", lambda c: {**c, "loss": "hinge"}, None, r"Unknown loss 'hinge'"),
    ("loss-not-for-softmax", lambda c: {**c, "loss": "binary_cross_entropy"}, None,
     r"holds an invalid bp model: .*binary_cross_entropy"),
    ("absurd-step-count", lambda c: {**c, "optimizer": {**c["optimizer"], "iterations": 10**30}},
     None, r"the optimizer's step count must be an integer in \[0, 2\*\*53\]\. Received: "
           r"iterations=1000000000000000000000000000000"),
    ("negative-step-count", lambda c: {**c, "optimizer": {**c["optimizer"], "iterations": -1}},
     None, r"step count must be an integer"),
    ("huge-layer", lambda c: {**c, "layers": [{**c["layers"][0], "units": 10**12},
                                              {**c["layers"][1], "input_dim": 10**12}]},
     None, r"holds an invalid bp model: a model of [\d,]+ parameters .*would need [\d,]+ bytes"),
    ("no-input-width", lambda c: {**c, "input_dim": None}, None, r"the config has no input_dim"),
    ("widths-disagree", lambda c: {**c, "layers": [{**c["layers"][0], "units": 7}, c["layers"][1]]},
     None, r"layer 1 .* expects input_dim=5 but receives 7 features"),
    ("rng-state-junk", lambda c: {**c, "rng_state": {"bit_generator": "MT19937", "state": 3}},
     None, r"holds an invalid bp model"),
    ("extra-entry", None, lambda a: a.update(extra=np.zeros(3)),
     r"its 'extra' entry declares [\d,]+ bytes; no such entry belongs in a model file"),
    ("deep-config", None, _deep, r"holds an invalid bp model: .*(recursion|depth)"),
]


@pytest.mark.parametrize("edit_config, edit_arrays, pattern",
                         [pytest.param(c, a, p, id=i) for i, c, a, p in CRAFTED])
def test_a_crafted_file_with_a_valid_checksum_is_a_value_error_naming_the_file(
        saved, edit_config, edit_arrays, pattern):
    _, path = saved
    _craft(path, edit_config, edit_arrays)
    with pytest.raises(ValueError, match=pattern) as info:
        bp.load(path)
    assert str(path) in str(info.value)


# ---- a zip bomb -----------------------------------------------------------------------------------
def _zip(path, members):
    """Write a zip by hand: members is a list of (name, method, data written, crc, size). It lets
    an entry be deflated once per repeated block (see _bomb) instead of compressing a GiB."""
    out, central = bytearray(), bytearray()
    for name, method, data, crc, size in members:
        raw = name.encode()
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data),
                           size, len(raw), 0) + raw + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc,
                               len(data), size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                                 len(central), len(out), 0)
    path.write_bytes(bytes(out))


def _bomb(path, saved_path, gib=1):
    """A copy of a saved model whose 'params' entry really inflates to `gib` GiB of zeros (a
    valid deflate stream and CRC; a few MB on disk)."""
    block_bytes = 1 << 24
    n_blocks = (gib << 30) // block_bytes
    header = bytearray()
    # a .npy header claiming that many float32 zeros
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (n_blocks * block_bytes // 4,)})
    header = buf.getvalue()
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(block_bytes)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every block
    data = head + block * n_blocks + c.flush()
    crc = zlib.crc32(header)
    for _ in range(n_blocks):
        crc = zlib.crc32(zeros, crc)
    members = []
    with np.load(saved_path) as f:
        for name in f.files:
            if name == "params":
                members.append(("params.npy", 8, data, crc, len(header) + n_blocks * block_bytes))
            else:
                b = io.BytesIO()
                np.save(b, f[name])
                members.append((name + ".npy", 0, b.getvalue(), zlib.crc32(b.getvalue()),
                                len(b.getvalue())))
    _zip(path, members)


def test_an_archive_inflating_to_a_gib_is_refused_before_inflating(saved, tmp_path):
    _, path = saved
    bomb = tmp_path / "bomb.npz"
    _bomb(bomb, path)
    assert bomb.stat().st_size < 8 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"its 'params' entry declares 1,073,741,952 bytes; "
                                             r"the architecture in its config needs [\d,]+ at most"):
            bp.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20, f"{peak:,} bytes allocated while refusing the bomb"


def test_the_hand_written_zip_is_a_real_archive(saved, tmp_path):
    # the bomb's writer, on the honest file: the same model comes back (so the bomb test refuses
    # a valid archive for its size, not for a malformed zip)
    model, path = saved
    with np.load(path) as f:
        members = []
        for name in f.files:
            import io
            b = io.BytesIO()
            np.save(b, f[name])
            data = b.getvalue()
            packed = zlib.compressobj(9, zlib.DEFLATED, -15)
            deflated = packed.compress(data) + packed.flush()
            members.append((name + ".npy", 8, deflated, zlib.crc32(data), len(data)))
    _zip(tmp_path / "copy.npz", members)
    assert R.params_equal(bp.load(tmp_path / "copy.npz"), model)


# ---- custom optimizers ----------------------------------------------------------------------------
class HalfSGD(bp.SGD):
    """SGD at half the rate: an update of the user's own, run in fit's Python step."""

    def _update(self, params, grads, lr, grad_scale, n_threads):
        super()._update(params, grads, lr / 2, grad_scale, n_threads)


def test_an_unregistered_optimizer_is_refused_at_save_time(tmp_path):
    class Mine(bp.SGD):
        pass

    model = R.classifier(trained=False)
    model.fit(*R.data(), optimizer=Mine(0.1, momentum=0.9), verbose=0)
    with pytest.raises(ValueError, match=r"the model's optimizer is a Mine, which bp\.load could not "
                                         r"rebuild: register the class first"):
        model.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_a_registered_optimizer_round_trips_and_trains_on_alike(tmp_path):
    bp.optimizers.register(HalfSGD)
    X, y = R.data()
    model = R.classifier(trained=False)
    model.fit(X, y, optimizer=HalfSGD(0.1, momentum=0.9), verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = bp.load(tmp_path / "m.npz")
    assert type(loaded.optimizer) is HalfSGD and loaded.optimizer.iterations == 1
    model.fit(X, y, epochs=2, verbose=0)
    loaded.fit(X, y, epochs=2, verbose=0)
    assert R.params_equal(model, loaded)


def test_register_refuses_what_is_not_an_optimizer_and_a_taken_name():
    with pytest.raises(TypeError, match=r"register takes a subclass of bp\.Optimizer"):
        bp.optimizers.register(dict)

    class SGD(bp.SGD):  # noqa: N801  (the clash is the point)
        pass

    with pytest.raises(ValueError, match=r"the optimizer name 'SGD' is taken"):
        bp.optimizers.register(SGD)
    assert bp.optimizers.register(name="OtherSGD")(SGD) is SGD


# ---- save writes regular files only ---------------------------------------------------------------
def _refused_save(path, pattern, tmp_path):
    model = R.classifier()
    before = R.snapshot(model)
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=pattern):
        model.save(path)
    R.assert_unchanged(before, R.snapshot(model))
    assert sorted(os.listdir(tmp_path)) == listing  # no temporary file left


def test_save_refuses_a_fifo_and_leaves_it_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused_save(fifo, r"path must be a regular file \(or a new one\)\. Received: .*pipe', which "
                        r"is a FIFO", tmp_path)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_save_refuses_a_character_device(tmp_path):
    # never a real device: os.stat is mocked to say the (new) path is one
    fake = os.stat_result((stat.S_IFCHR | 0o666, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    target = tmp_path / "dev"
    with mock.patch.object(_io.os, "stat", return_value=fake):
        _refused_save(target, r"which is a device", tmp_path)
    assert not target.exists()


@pytest.mark.parametrize("make, pattern", [
    (lambda d: d, r"path must be a regular file .*which is a directory"),
    (lambda d: "", r"path must name a file\. Received: path=''"),
    (lambda d: d / "missing" / "m.npz", r"path must be in an existing folder"),
])
def test_save_refuses_a_directory_nothing_and_a_missing_folder(tmp_path, make, pattern):
    _refused_save(make(tmp_path), pattern, tmp_path)


def test_save_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    _refused_save(tmp_path / "file" / "m.npz", r"path must be in an existing folder", tmp_path)


def test_save_through_a_symlink_writes_its_target(tmp_path):
    target = tmp_path / "real.npz"
    R.classifier(seed=1).save(target)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    model = R.classifier()
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert R.params_equal(bp.load(target), model)
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "real.npz"]


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.npz"
    link.symlink_to(tmp_path / "new.npz")
    model = R.classifier()
    model.save(link)
    assert link.is_symlink() and R.params_equal(bp.load(tmp_path / "new.npz"), model)


def test_a_symlink_to_a_fifo_is_refused_naming_the_target(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link.npz"
    link.symlink_to(fifo)
    _refused_save(link, r"which is a FIFO \(through a link to .*pipe'\)", tmp_path)
