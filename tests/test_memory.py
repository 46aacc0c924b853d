"""Memory: no growth over thousands of training steps (bench/memory.py runs the issue's 100000).

A training step reuses its per-batch-size workspace and allocates nothing that outlives it, so
after a warm-up the resident set must stay flat. Two windows of equal length are compared: a
leak of b bytes per step shows as ~N b in the second window, while one-time growth (allocator
arenas, BLAS buffers) settles in the warm-up. tracemalloc, which sees every NumPy allocation,
gives a byte-exact second opinion on the Python side.
"""

import gc
import os
import sys
import tracemalloc

import numpy as np
import pytest

import bp

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
PAGE = os.sysconf("SC_PAGE_SIZE")
STEPS = 3000


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def setup(steps_per_epoch=30, batch_size=8):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((steps_per_epoch * batch_size, 16))
    y = rng.integers(0, 4, len(X))
    model = bp.Sequential([bp.Dense(32, activation="relu"), bp.Dense(4, activation="softmax")], seed=0)
    return model, X, y, batch_size, steps_per_epoch


def windows(run, n):
    """RSS growth over two consecutive windows of n steps each, after a warm-up of n // 3."""
    run(n // 3)
    gc.collect()
    r0 = rss()
    run(n)
    gc.collect()
    r1 = rss()
    run(n)
    gc.collect()
    r2 = rss()
    return r1 - r0, r2 - r1


# 512 KiB over 3000 steps: a leak of more than ~170 bytes per step fails. History adds a few
# floats per epoch (about 100 epochs here), well under the bound.
BOUND = 512 * 1024


def test_fit_does_not_grow():
    model, X, y, bs, per_epoch = setup()

    def run(steps):
        model.fit(X, y, epochs=max(1, steps // per_epoch), batch_size=bs, verbose=0)

    first, second = windows(run, STEPS)
    assert second < BOUND, f"RSS grew {second} bytes over {STEPS} steps (first window {first})"


def test_explicit_loop_and_predict_do_not_grow():
    model, X, y, bs, _ = setup()
    Xb, yb = X[:bs], y[:bs]

    def run(steps):
        for _ in range(steps):
            model.zero_grad()
            model.backward(Xb, yb, loss="cross_entropy")
            model.step("sgd" if model.optimizer is None else None)
            model.predict(Xb)

    first, second = windows(run, STEPS // 3)  # four calls per step: a third as many steps
    assert second < BOUND, f"RSS grew {second} bytes over {STEPS // 3} steps (first window {first})"


def test_no_python_allocation_survives_a_step():
    """tracemalloc: over 1000 further steps the traced memory grows by less than the History's
    few floats per epoch (and nothing proportional to the steps)."""
    model, X, y, bs, per_epoch = setup()
    model.fit(X, y, epochs=5, batch_size=bs, verbose=0)
    gc.collect()
    tracemalloc.start()
    try:
        model.fit(X, y, epochs=2, batch_size=bs, verbose=0)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        model.fit(X, y, epochs=34, batch_size=bs, verbose=0)  # ~1000 steps
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, f"{grown} bytes of Python allocations outlived ~1000 steps"
