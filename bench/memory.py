"""Resident memory over a long training run: does any step leak?

    python bench/memory.py                 # 100000 training steps (the issue's count)
    python bench/memory.py --steps 20000 --batch-size 32 --dtype float64
    python bench/memory.py --varying-only   # only the run over many batch sizes

Trains a 32-64-64-10 network with fit (epochs of 100 steps each) and reads the resident set size
from /proc/self/statm at the end of every epoch (Linux; elsewhere the peak from getrusage). Prints
RSS after warm-up, at every tenth of the run and at the end, the growth after warm-up and the
least-squares slope in bytes per step over the second half, where a leak would show. Also runs the
explicit loop (backward + step) and predict for the same number of calls.

Then the varying-batch-size run (issue 22): on a 64-512-512-10 network, backward over
micro-batches of 1..600 rows, gradients over the same sizes, and partial_fit over chunks of
1..400 rows, printing the RSS before and after each. The workspaces are cached per batch size;
with a bounded cache the growth stays flat, unbounded it grows with every new size.
"""

import argparse
import gc
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bp  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes():
    """Current resident set size (Linux); elsewhere the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class Recorder(bp.Callback):
    def __init__(self, steps_per_epoch):
        self.steps_per_epoch = steps_per_epoch
        self.samples = []  # (steps done, rss)

    def on_epoch_end(self, epoch, logs=None):
        self.samples.append(((epoch + 1) * self.steps_per_epoch, rss_bytes()))


def slope(samples):
    """Bytes per step over the second half of the samples (least squares)."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return float("nan")
    x = np.array([s for s, _ in half], float)
    y = np.array([r for _, r in half], float)
    return float(np.polyfit(x, y, 1)[0])


def mib(b):
    return f"{b / 2**20:8.2f} MiB"


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--warmup-steps", type=int, default=2000)
    p.add_argument("--varying-only", action="store_true",
                   help="run only the varying-batch-size measurement")
    args = p.parse_args()
    if args.varying_only:
        return varying_batch_sizes(args.dtype)

    steps_per_epoch = 100
    rng = np.random.default_rng(0)
    X = rng.standard_normal((steps_per_epoch * args.batch_size, 32))
    y = rng.integers(0, 10, len(X))
    model = bp.Sequential([bp.Dense(64, activation="relu"), bp.Dense(64, activation="tanh"),
                           bp.Dense(10, activation="softmax")], dtype=args.dtype, seed=0)
    print(f"bp {bp.__version__}, {bp.get_num_threads()} thread(s), {args.dtype}, "
          f"batch {args.batch_size}, {steps_per_epoch} steps per epoch")

    # warm-up: workspaces, BLAS buffers, OpenMP pools, the allocator's arenas
    model.fit(X, y, epochs=max(1, args.warmup_steps // steps_per_epoch),
              batch_size=args.batch_size, verbose=0)
    gc.collect()
    start = rss_bytes()
    rec = Recorder(steps_per_epoch)
    t0 = time.perf_counter()
    epochs = args.steps // steps_per_epoch
    model.fit(X, y, epochs=epochs, batch_size=args.batch_size, verbose=0, callbacks=[rec])
    seconds = time.perf_counter() - t0
    gc.collect()
    end = rss_bytes()
    print(f"\nfit: {epochs * steps_per_epoch} steps in {seconds:.1f} s "
          f"({seconds / (epochs * steps_per_epoch) * 1e6:.1f} us/step)")
    print(f"  RSS after warm-up {mib(start)}")
    for k in range(1, 11):
        steps, rss = rec.samples[min(len(rec.samples) - 1, k * len(rec.samples) // 10 - 1)]
        print(f"  after {steps:>7} steps {mib(rss)}")
    print(f"  growth {mib(end - start)}  "
          f"({(end - start) / (epochs * steps_per_epoch):+.2f} B/step); "
          f"slope over the second half {slope(rec.samples):+.3f} B/step; "
          f"history holds {len(model.history.epoch)} epochs")

    # the explicit loop and predict, the same number of calls
    batch = args.batch_size
    for name, call in [("backward+step", lambda i: (model.zero_grad(),
                                                    model.backward(X[:batch], y[:batch]),
                                                    model.step())),
                       ("predict", lambda i: model.predict(X[:batch]))]:
        for i in range(args.warmup_steps):
            call(i)
        gc.collect()
        before = rss_bytes()
        samples = []
        t0 = time.perf_counter()
        for i in range(args.steps):
            call(i)
            if (i + 1) % (args.steps // 20 or 1) == 0:
                samples.append((i + 1, rss_bytes()))
        gc.collect()
        after = rss_bytes()
        print(f"{name}: {args.steps} calls in {time.perf_counter() - t0:.1f} s; "
              f"RSS {mib(before)} -> {mib(after)}, growth {mib(after - before)}; "
              f"slope over the second half {slope(samples):+.3f} B/call")
    varying_batch_sizes(args.dtype)


def varying_batch_sizes(dtype):
    """RSS growth over many distinct batch sizes (each would have its own workspace)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 64))
    y = rng.integers(0, 10, len(X))
    model = bp.Sequential([bp.Dense(512, activation="relu"), bp.Dense(512, activation="relu"),
                           bp.Dense(10, activation="softmax")], dtype=dtype, seed=0)
    model.build(64)
    print(f"\nvarying batch sizes, 64-512-512-10, {dtype}")
    runs = [("backward, micro-batches of 1..600 rows", 600,
             lambda n: model.backward(X[:n], y[:n], total_samples=600)),
            ("gradients, 1..600 rows", 600, lambda n: model.gradients(X[:n], y[:n])),
            ("partial_fit, chunks of 1..400 rows", 400,
             lambda n: model.partial_fit(X[:n], y[:n], batch_size=n, optimizer="sgd"))]
    for name, top, call in runs:
        gc.collect()
        before = rss_bytes()
        for n in range(1, top + 1):
            call(n)
        gc.collect()
        after = rss_bytes()
        print(f"{name}: RSS {mib(before)} -> {mib(after)}, growth {mib(after - before)}")


if __name__ == "__main__":
    main()
