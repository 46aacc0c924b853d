"""The model file format: one .npz file, written atomically, read without pickle.

This module knows the format, not the model: ``write(path, config, arrays)`` and
``read(path) -> (config, arrays)``. Sequential.save builds the config and the arrays, and
bp.load rebuilds the model from them with Sequential.from_config.

File layout (all plain arrays; np.load(..., allow_pickle=False) reads it):
    bp_format    int64[1]   the format version (FORMAT_VERSION)
    config       uint8[]    UTF-8 JSON: dtype, seed, layers, loss, optimizer class and config,
                            the state of the shuffling generator
    params       float[]    the flat parameter vector (see Sequential.get_flat_params)
    opt_<name>   float[]    optimizer state buffers (momenta), if any
    checksum     uint8[32]  SHA-256 of the config bytes, then every other array's bytes by name

save writes to a temporary file in the same directory, flushes and fsyncs it, then renames it
over the target (and fsyncs the directory), so a crash leaves either the old file or the new one,
never half of one. load reads only zip archives (np.load would read anything else as .npy, or
try to unpickle it), and every failure is a ValueError naming the file: no half-built model.
"""

import hashlib
import json
import os
import tempfile

import numpy as np

# 2: layers beyond Dense (a {"class_name", "config"} entry each) and a BatchNormalization's
# running statistics (arrays running_<k>); a file of format 1 (Dense layers with their folded
# Dropout) reads the same way
FORMAT_VERSION = 2
READS = (1, 2)


def _checksum(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == "checksum":
            continue
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def write(path, config, arrays, version=FORMAT_VERSION):
    """Write `config` (JSON-able) and `arrays` (name -> array: params, opt_<name>) to `path`,
    with the format version and the checksum, atomically."""
    path = os.fspath(path)
    arrays = {
        "bp_format": np.array([version], dtype=np.int64),
        "config": np.frombuffer(json.dumps(config).encode("utf-8"), dtype=np.uint8),
        **arrays,
    }
    arrays["checksum"] = _checksum(arrays)
    directory = os.path.dirname(os.path.abspath(path))
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=".bp-save-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would have
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _file_mode(path):
    """The mode the saved file should have: the old file's if it exists, else 0666 minus the
    umask (read from /proc where possible: os.umask would change it process-wide, racing
    other threads)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        pass
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read(path):
    """(config, arrays) of a file written by ``write``: the parsed config, and every other entry
    but the version and the checksum by name.

    Raises ValueError for a file that is not a bp model, is truncated or corrupted (checksum), or
    has another format version; never unpickles anything.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{path!r} cannot be read as a bp model file: {exc}") from None
    if magic != b"PK\x03\x04":  # np.load would take anything else as .npy or a pickle
        raise ValueError(f"{path!r} is not a bp model file: expected an .npz (zip) archive "
                         f"written by Sequential.save. Received: "
                         + (f"a file starting with {magic!r}" if magic else "an empty file"))
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # noqa: BLE001
        # A damaged archive surfaces as whatever the zip and .npy readers meet first: BadZipFile,
        # EOFError, NotImplementedError (a flipped version or compression byte), zlib.error,
        # RuntimeError (a flipped "encrypted" flag), MemoryError (a header claiming an absurd
        # shape)... To the caller each means the same thing.
        raise ValueError(f"{path!r} is not a readable bp model file (.npz): {exc}") from None
    if "bp_format" not in arrays:
        raise ValueError(f"{path!r} is not a bp model file: no 'bp_format' entry")
    fmt = arrays["bp_format"]
    if fmt.shape != (1,) or fmt.dtype.kind not in "iu":
        raise ValueError(f"{path!r} is not a bp model file: 'bp_format' must be one integer. "
                         f"Received: dtype {fmt.dtype}, shape {fmt.shape}")
    version = int(fmt[0])
    if version not in READS:
        raise ValueError(f"{path!r} has bp file format version {version}; this bp reads versions "
                         f"{READS[0]} to {READS[-1]}"
                         + (" (a newer bp wrote it: upgrade bp)" if version > READS[-1] else ""))
    for key in ("config", "params", "checksum"):
        if key not in arrays:
            raise ValueError(f"{path!r} is not a complete bp model file: no {key!r} entry")
    if not np.array_equal(arrays["checksum"], _checksum(arrays)):
        raise ValueError(f"{path!r} is corrupted: its checksum does not match its contents")
    try:
        config = json.loads(arrays["config"].tobytes().decode("utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path!r} holds an invalid bp model: {exc}") from None
    return config, {name: a for name, a in arrays.items()
                    if name not in ("bp_format", "config", "checksum")}
