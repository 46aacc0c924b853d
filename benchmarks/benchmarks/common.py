"""Data and networks shared by the benchmarks: fixed seeds, public API only (so that a benchmark
keeps measuring the same thing while bp's internals move under it)."""

import numpy as np

import bp

MNIST = (256, 128)  # hidden widths of the mnist-like net: 784-256-128-10
DIGITS = (128, 64)  # the digits net of bench/api.py: 64-128-64-10


def mnist_like(rows, dtype, seed=0):
    """Random rows of mnist's shape (784 features in [0, 1), 10 classes)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (rows, 784)).astype(dtype), rng.integers(0, 10, rows)


def digits(dtype="float32"):
    """scikit-learn's digits (1797 x 64, shipped with it: no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(dtype), y


def net(hidden, n_in, dtype, seed=0):
    """relu hidden layers and a softmax output (cross-entropy), built for n_in features."""
    layers = [bp.Dense(units, activation="relu") for units in hidden]
    layers.append(bp.Dense(10, activation="softmax"))
    return bp.Sequential(layers, dtype=dtype, seed=seed).build(n_in)
