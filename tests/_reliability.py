"""Shared by the reliability tests: small models and data, and a snapshot of everything a rejected
call must leave untouched (weights, optimizer state, history, the seeded generator)."""

import numpy as np

import bp

N_FEATURES, N_CLASSES, N_SAMPLES = 4, 3, 10


def data(n=N_SAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_FEATURES))
    y = rng.integers(0, N_CLASSES, n)
    y[:N_CLASSES] = np.arange(N_CLASSES)  # every class present
    return X, y


def classifier(seed=0, dtype="float32", trained=True):
    """4 -> 5 tanh -> 3 softmax, cross-entropy; trained one epoch (so it has Adam state and a
    History) unless trained=False."""
    model = bp.Sequential([bp.Dense(5, activation="tanh"), bp.Dense(N_CLASSES, activation="softmax")],
                          dtype=dtype, seed=seed)
    if trained:
        X, y = data()
        model.fit(X, y, loss="cross_entropy", optimizer=bp.Adam(1e-2), epochs=1, batch_size=4,
                  verbose=0)
    return model


def regressor(seed=0, trained=True):
    """4 -> 5 relu -> 2 identity, mse."""
    model = bp.Sequential([bp.Dense(5, activation="relu"), bp.Dense(2)], seed=seed)
    if trained:
        X, _ = data()
        model.fit(X, X[:, :2] * 2.0, loss="mse", optimizer=bp.SGD(0.05, momentum=0.9), epochs=1,
                  batch_size=4, verbose=0)
    return model


def binary(seed=0, trained=True):
    """4 -> 5 relu -> 2 sigmoid, binary cross-entropy."""
    model = bp.Sequential([bp.Dense(5, activation="relu"), bp.Dense(2, activation="sigmoid")],
                          seed=seed)
    if trained:
        X, _ = data()
        model.fit(X, (X[:, :2] > 0).astype(float), loss="binary_cross_entropy", epochs=1,
                  batch_size=4, verbose=0)
    return model


def snapshot(model):
    """Everything a call may change, copied: compare two snapshots with assert_unchanged."""
    opt = model.optimizer
    h = getattr(model, "history", None)
    return {
        "built": model.built,
        "params": None if not model.built else model._params.copy(),
        "grads": None if not model.built else model._grads.copy(),
        "cached passes": None if model.error_signals is None else [d.copy() for d in model.error_signals],
        "input_dim": model.input_dim,
        "layers": [(L.input_dim, L.built) for L in model.layers],
        "loss": model.loss,
        "optimizer": None if opt is None else {
            "object": id(opt), "iterations": opt.iterations, "lr": opt._lr,
            "state": {k: v.copy() for k, v in opt._state.items()}},
        "history": None if h is None else {
            "object": id(h), "history": {k: list(v) for k, v in h.history.items()},
            "epoch": list(h.epoch), "stopped": h.stopped, "stopped_at": h.stopped_at},
        "rng": model._rng.bit_generator.state,
    }


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())  # bitwise: NaN == NaN
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def assert_unchanged(before, after):
    for key in before:
        assert _same(before[key], after[key]), f"{key} changed: {before[key]!r} -> {after[key]!r}"


def params_equal(a, b):
    """Bit-identical flat parameters."""
    a, b = a.get_flat_params(), b.get_flat_params()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
