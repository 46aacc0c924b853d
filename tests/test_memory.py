"""Memory: no growth over thousands of training steps (bench/memory.py runs the issue's 100000).

A training step reuses its per-batch-size workspace and allocates nothing that outlives it, so
after a warm-up the resident set must stay flat. Two windows of equal length are compared: a
leak of b bytes per step shows as ~N b in the second window, while one-time growth (allocator
arenas, BLAS buffers) settles in the warm-up. The resident set is noisy (pages the allocator
keeps or gives back, threads of other libraries), so its bound is wide, 4 MiB: it catches a
compiled-code leak of a few hundred bytes a step, which is what tracemalloc cannot see.
tracemalloc, which sees every Python and NumPy allocation, gives the exact, deterministic check
on the Python side, for fit and for the explicit loop alike.
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
STEPS = 15000


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


# 4 MiB over 15000 fit steps: a leak of more than ~280 bytes per step fails (a NumPy array of one
# batch is larger), while the noise measured between windows is a few pages. History adds a few
# floats per epoch (about 500 epochs here), well under the bound.
BOUND = 4 * 1024 * 1024


def test_fit_does_not_grow():
    model, X, y, bs, per_epoch = setup()

    def run(steps):
        model.fit(X, y, epochs=max(1, steps // per_epoch), batch_size=bs, verbose=0)

    first, second = windows(run, STEPS)
    assert second < BOUND, f"RSS grew {second} bytes over {STEPS} steps (first window {first})"


def explicit_loop():
    model, X, y, bs, _ = setup()
    Xb, yb = X[:bs], y[:bs]

    def run(steps):
        for _ in range(steps):
            model.zero_grad()
            model.backward(Xb, yb, loss="cross_entropy")
            model.step("sgd" if model.optimizer is None else None)
            model.predict(Xb)

    return run


LOOP_STEPS = 1000  # four calls a step, each ~100 times slower than a compiled step


def test_explicit_loop_and_predict_do_not_grow():
    first, second = windows(explicit_loop(), LOOP_STEPS)
    assert second < BOUND, f"RSS grew {second} bytes over {LOOP_STEPS} steps (first window {first})"


def test_no_python_allocation_survives_an_explicit_step():
    """tracemalloc: 1000 further zero_grad/backward/step/predict rounds keep nothing."""
    run = explicit_loop()
    run(50)
    gc.collect()
    tracemalloc.start()
    try:
        run(200)  # traced from here: the interpreter's free lists fill once
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        run(LOOP_STEPS)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 4 * 1024, f"{grown} bytes of Python allocations outlived {LOOP_STEPS} steps"


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
