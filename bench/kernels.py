"""Benchmark bp's three passes, kernel against the NumPy reference, and the two thresholds that
decide how the kernels run.

    python bench/kernels.py                      the passes: bp kernel vs bp._reference (NumPy)
    python bench/kernels.py --gemm-crossover     own gemm loops vs BLAS: where do own loops stop
                                                 winning?
    python bench/kernels.py --parallel-crossover 1 vs 2 OpenMP threads on the elementwise epilogues
    python bench/kernels.py --quick              a tiny configuration (the test suite runs this)

The passes (for a layer n_in -> n_out and a batch of n):
    forward       z_in = x @ W + b, z_out = sigma(z_in)
                  (n, n_in) @ (n_in, n_out)
    error signal  delta = (delta_next @ W.T) * sigma'(z_in), the layer below
                  (n, n_out) @ (n_out, n_in)
    gradients     grad_W = x.T @ delta, grad_b = sum_i delta_i               (n_in, n) @ (n, n_out)
The bp side calls the bpcore entry points directly (the dtype's specialisation, preallocated
outputs): it measures the kernel, not bp.kernels' validation. The NumPy side is bp._reference as it
is, allocating its results. Threads: bp.num_threads(t) sets the kernels' OpenMP count and holds
BLAS (NumPy's too) to the same count through threadpoolctl.
All times are in-process, perf_counter_ns, interleaved, medians over repeats (bench/_harness.py).
"""

import argparse
import os
import platform
import sys
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bp and bpcore from this tree, not an installed copy

import numpy as np  # noqa: E402
from _harness import compare, markdown_table, us  # noqa: E402

import bp  # noqa: E402
import bpcore  # noqa: E402
from bp import _reference as R  # noqa: E402
from bpcore import _blas, _dense_forward, _error_signal, _gradients, _openmp, _param_update  # noqa: E402

CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def spec(fused, dtype):
    """The dtype's specialisation of a fused Cython function: skips the fused-type dispatch."""
    return fused[CTYPE[np.dtype(dtype)]]


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = ", ".join(f"{d['internal_api']} {d['version']}" for d in bp._threads.blas_info())
    return (f"{cpu}, {os.cpu_count()} logical CPUs; numpy {np.__version__}; BLAS: {blas}; "
            f"OpenMP {'on' if _openmp.openmp_enabled() else 'off'}")


def crossover(wins, column):
    """(the largest size where the first candidate still wins, the next size measured) from rows
    (size, first wins by median, first wins by min); column 1 = medians, 2 = minima."""
    last = max([w[0] for w in wins if w[column]], default=0)
    after = min([w[0] for w in wins if w[0] > last], default=None)
    return last, after if after is not None else "-"


# ---- the three passes ----------------------------------------------------------------------------


def pass_candidates(name, dtype, n, n_in, n_out, threads, activation, rng):
    """{"bp": fn, "numpy": fn} for one pass on one layer."""
    code = bpcore.ACTIVATIONS[activation]
    x = rng.standard_normal((n, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    if name == "forward":
        z_in, z_out = np.empty((n, n_out), dtype), np.empty((n, n_out), dtype)
        kernel = spec(_dense_forward.dense_forward, dtype)
        return {"bp": lambda: kernel(x, W, b, z_in, z_out, code, 0.01, threads),
                "numpy": lambda: R.dense_forward(x, W, b, activation)}
    if name == "error signal":
        # the layer below this one has n_in units: its delta is (delta @ W.T) * sigma'
        delta_next = rng.standard_normal((n, n_out)).astype(dtype)
        z_in = rng.standard_normal((n, n_in)).astype(dtype)
        z_out = R.sigma(activation, z_in).astype(dtype)
        out = np.empty((n, n_in), dtype)
        kernel = spec(_error_signal.hidden_delta, dtype)
        return {"bp": lambda: kernel(delta_next, W, z_in, z_out, code, 0.01, out, threads),
                "numpy": lambda: R.hidden_delta(delta_next, W, z_in, z_out, activation)}
    if name == "gradients":
        delta = rng.standard_normal((n, n_out)).astype(dtype)
        gW, gb = np.empty((n_in, n_out), dtype), np.empty(n_out, dtype)
        kernel = spec(_gradients.gradients, dtype)
        return {"bp": lambda: kernel(x, delta, 0.0, gW, gb, threads),
                "numpy": lambda: R.gradients(x, delta)}
    raise ValueError(name)


def bench_passes(layers, dtypes, thread_counts, activation, repeat, warmup, target_ns):
    rng = np.random.default_rng(0)
    rows = []
    for n, n_in, n_out in layers:
        for dtype in dtypes:
            for threads in thread_counts:
                with bp.num_threads(threads):
                    for name in ("forward", "error signal", "gradients"):
                        cands = pass_candidates(name, dtype, n, n_in, n_out, threads, activation,
                                                rng)
                        # long calls on 2 threads: let the other library's BLAS pool go idle
                        settle = 0.2 if threads > 1 and n * n_in * n_out > 10**7 else 0.0
                        t = compare(cands, repeat=repeat, warmup=warmup, target_ns=target_ns,
                                    settle_s=settle)
                        rows.append([name, f"{n}x{n_in}->{n_out}", np.dtype(dtype).name, threads,
                                     us(t["bp"]["median"]), us(t["numpy"]["median"]),
                                     f"{t['numpy']['median'] / t['bp']['median']:.2f}",
                                     us(t["bp"]["min"]), us(t["numpy"]["min"])])
    print(f"\n## Passes: bp kernel vs NumPy reference (activation {activation}; "
          f"{repeat} interleaved repeats)\n")
    print(markdown_table(["pass", "batch x layer", "dtype", "threads", "bp median us",
                          "numpy median us", "numpy/bp", "bp min us", "numpy min us"], rows))


# ---- gemm: own loops vs BLAS ---------------------------------------------------------------------

# The three products the kernels make, as (trans_a, trans_b): forward x @ W, error signal
# delta @ W.T, gradients x.T @ delta.
PRODUCTS = {"forward (A @ B)": (False, False), "error signal (A @ B.T)": (False, True),
            "gradients (A.T @ B)": (True, False)}


def bench_gemm_crossover(dtypes, thread_counts, sizes, repeat, warmup, target_ns):
    rng = np.random.default_rng(0)
    print(f"\n## gemm: own loops vs BLAS (square m = n = k; {repeat} interleaved repeats; "
          f"own-loop threshold now m*n*k <= {_blas.SMALL_GEMM_THRESHOLD})\n")
    summary = []
    for threads in thread_counts:
        with bp.num_threads(threads):
            for dtype in dtypes:
                gemm = spec(_blas._gemm, dtype)
                for label, (ta, tb) in PRODUCTS.items():
                    rows, wins = [], []
                    for s in sizes:
                        A = rng.standard_normal((s, s)).astype(dtype)
                        B = rng.standard_normal((s, s)).astype(dtype)
                        C = np.zeros((s, s), dtype)
                        t = compare({"own": partial(gemm, ta, tb, 1.0, A, B, 0.0, C, "own"),
                                     "blas": partial(gemm, ta, tb, 1.0, A, B, 0.0, C, "blas")},
                                    repeat=repeat, warmup=warmup, target_ns=target_ns)
                        own, blas = t["own"]["median"], t["blas"]["median"]
                        own_min, blas_min = t["own"]["min"], t["blas"]["min"]
                        wins.append((s**3, own <= blas, own_min <= blas_min))
                        rows.append([s**3, s, us(own), us(blas), f"{blas / own:.2f}",
                                     us(own_min), us(blas_min), f"{blas_min / own_min:.2f}"])
                    summary.append([label, np.dtype(dtype).name, threads, *crossover(wins, 1),
                                    *crossover(wins, 2)])
                    print(f"### {label}, {np.dtype(dtype).name}, {threads} thread(s)\n")
                    print(markdown_table(["m*n*k", "m=n=k", "own median us", "blas median us",
                                          "blas/own", "own min us", "blas min us",
                                          "blas/own (min)"], rows))
                    print()
    print("### Crossover: the largest m*n*k where own loops still win (or tie), and the next size "
          "measured; by medians and by minima\n")
    print(markdown_table(["product", "dtype", "threads", "own wins up to", "BLAS wins from",
                          "own wins up to (min)", "BLAS wins from (min)"], summary))


# ---- elementwise epilogues: 1 vs 2 threads -------------------------------------------------------


def bench_parallel_crossover(dtypes, works, repeat, warmup, target_ns, width=64):
    """Time the row sweeps with 1 and 2 OpenMP threads, the threshold lowered so that 2 can run.

    dense_forward with n_in = 1 makes the gemm negligible and BLAS is held to 1 thread, so the
    difference is the epilogue: bias + sigma over n x width elements, rows split between threads.
    """
    rng = np.random.default_rng(0)
    old = _openmp._set_min_parallel_work(1)
    summary = []
    try:
        with bp.num_threads(1):  # BLAS on one thread; the kernels get n_threads explicitly
            for dtype in dtypes:
                for label in ("forward identity", "forward relu", "forward sigmoid",
                              "forward tanh", "output delta mse/sigmoid", "sgd momentum"):
                    rows, wins = [], []
                    for work in works:
                        cands = {}
                        for threads in (1, 2):
                            cands[threads] = _epilogue(label, dtype, work, width, threads, rng)
                        t = compare(cands, repeat=repeat, warmup=warmup, target_ns=target_ns)
                        t1, t2 = t[1]["median"], t[2]["median"]
                        m1, m2 = t[1]["min"], t[2]["min"]
                        wins.append((work, t1 <= t2, m1 <= m2))  # serial wins (or ties)
                        rows.append([work, us(t1), us(t2), f"{t1 / t2:.2f}", us(m1), us(m2),
                                     f"{m1 / m2:.2f}"])
                    summary.append([label, np.dtype(dtype).name, *crossover(wins, 1),
                                    *crossover(wins, 2)])
                    print(f"\n### {label}, {np.dtype(dtype).name} (rows of {width})\n")
                    print(markdown_table(["elements", "1 thread median us", "2 threads median us",
                                          "speed-up", "1 thread min us", "2 threads min us",
                                          "speed-up (min)"], rows))
    finally:
        _openmp._set_min_parallel_work(old)
    print(f"\n### Crossover (threshold now {old} elements): the largest size where 1 thread still "
          "wins, and the next size measured; by medians and by minima (the uncontended cost on a "
          "shared machine)\n")
    print(markdown_table(["kernel", "dtype", "serial wins up to", "2 threads win from",
                          "serial wins up to (min)", "2 threads win from (min)"], summary))


def _epilogue(label, dtype, work, width, threads, rng):
    n = max(2, work // width)
    if label.startswith("forward"):
        act = label.split()[1]
        x = rng.standard_normal((n, 1)).astype(dtype)
        W = rng.standard_normal((1, width)).astype(dtype)
        b = rng.standard_normal(width).astype(dtype)
        z_in, z_out = np.empty((n, width), dtype), np.empty((n, width), dtype)
        kernel, code = spec(_dense_forward.dense_forward, dtype), bpcore.ACTIVATIONS[act]
        return lambda: kernel(x, W, b, z_in, z_out, code, 0.01, threads)
    if label.startswith("output delta"):
        f_in = rng.standard_normal((n, width)).astype(dtype)
        f_out = R.sigma("sigmoid", f_in).astype(dtype)
        y = rng.uniform(0, 1, (n, width)).astype(dtype)
        out = np.empty((n, width), dtype)
        kernel = spec(_error_signal.output_delta, dtype)
        loss, tau = bpcore.LOSSES["mse"], bpcore.ACTIVATIONS["sigmoid"]
        return lambda: kernel(f_in, f_out, y, None, loss, tau, 0.01, 1.0 / f_in.size, out, threads)
    if label.startswith("sgd"):
        g = rng.standard_normal(n * width).astype(dtype)
        p, v = np.zeros(n * width, dtype), np.zeros(n * width, dtype)
        kernel = spec(_param_update.sgd_update, dtype)
        return lambda: kernel(g, 1e-6, 0.9, False, 0.0, 1.0, p, v, threads)
    raise ValueError(label)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny configuration (seconds)")
    ap.add_argument("--gemm-crossover", action="store_true")
    ap.add_argument("--parallel-crossover", action="store_true")
    ap.add_argument("--repeat", type=int, default=None, help="interleaved repeats per measurement")
    ap.add_argument("--activation", default="relu", choices=list(bpcore.ACTIVATIONS))
    ap.add_argument("--dtype", choices=["float32", "float64"], default=None)
    args = ap.parse_args(argv)

    dtypes = [np.float32, np.float64] if args.dtype is None else [np.dtype(args.dtype).type]
    quick = args.quick
    repeat = args.repeat or (3 if quick else 15)
    warmup, target_ns = (1, 20_000) if quick else (3, 200_000)
    threads = [1, 2] if _openmp.openmp_enabled() or quick else [1]
    print(f"# bp kernel benchmarks\n\n{machine()}")

    if args.gemm_crossover:
        sizes = [4, 6, 8] if quick else [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 20, 22, 24,
                                         26, 28, 32, 36, 40, 46]
        bench_gemm_crossover(dtypes, threads, sizes, repeat, warmup, target_ns)
    if args.parallel_crossover:
        works = ([1024, 65536] if quick else
                 [1024, 2048, 4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 131072,
                  262144, 524288])
        bench_parallel_crossover(dtypes, works, repeat, warmup, target_ns)
    if quick or not (args.gemm_crossover or args.parallel_crossover):
        layers = [(8, 4, 16)] if quick else [(32, 64, 128), (256, 1024, 4096)]
        bench_passes(layers, dtypes, threads, args.activation, repeat, warmup, target_ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
