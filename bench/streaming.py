"""fit on a memory-mapped file (streamed in blocks, bp/_streaming.py) against fit on the same
array in memory: one epoch each, interleaved, the file in the page cache.

Usage:
    python bench/streaming.py                     # 60000 x 784 float32 (188 MB), 784-256-128-10
    python bench/streaming.py --rows 20000 --threads 1 2 --repeat 5

Both fits train the same network from the same weights with the same batch size and shuffle; the
streamed one reads ~32 MB blocks of rows with file reads into a buffer (a copy the in-memory fit
does not make) and shuffles within blocks. Reported: median and minimum seconds per epoch, and
the ratio streamed / in-memory, per thread count, with the CPU and the BLAS.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from _harness import compare, markdown_table  # noqa: E402

import bp  # noqa: E402


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = ", ".join(f"{d['internal_api']} {d['version']} ({d.get('architecture')})"
                     for d in bp._threads.blas_info())
    return f"{cpu}, {os.cpu_count()} logical CPUs; numpy {np.__version__}; BLAS: {blas}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.rows)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "X.npy")
        np.save(path, X)
        Xm = np.load(path, mmap_mode="r")
        for threads in args.threads:
            bp.set_num_threads(threads)
            models = {}
            for name in ("in memory", "memmap"):
                models[name] = bp.Sequential([bp.Dense(256, activation="relu"),
                                              bp.Dense(128, activation="relu"),
                                              bp.Dense(10, activation="softmax")], seed=0)
            data = {"in memory": X, "memmap": Xm}

            def epoch(name, models=models, data=data):
                return lambda: models[name].fit(data[name], y, epochs=1, batch_size=128,
                                                optimizer=bp.SGD(0.01), verbose=0)

            res = compare({name: epoch(name) for name in data}, repeat=args.repeat, warmup=1,
                          target_ns=1)
            mem, mm = res["in memory"], res["memmap"]
            rows.append([threads, "float32", f"{mem['median'] / 1e9:.3f}",
                         f"{mm['median'] / 1e9:.3f}", f"{mm['median'] / mem['median']:.3f}",
                         f"{mem['min'] / 1e9:.3f}", f"{mm['min'] / 1e9:.3f}"])
    print(f"{machine()}\n{args.rows} x 784 float32 ({X.nbytes / 2**20:.0f} MB), 784-256-128-10 "
          f"relu/softmax, batch 128, SGD; {args.repeat} interleaved repeats of one epoch\n")
    print(markdown_table(["threads", "dtype", "in memory s (median)", "memmap s (median)",
                          "memmap / in memory", "in memory s (min)", "memmap s (min)"], rows))


if __name__ == "__main__":
    main()
