"""bp's bfloat16 GEMM (bpcore._bf16) against float32 sgemm and PyTorch's bf16 matmul, on the matrix
products of one training step, with the measured vdpbf16ps peak as the limit.

Per network (bench/train_step.py's shapes) one candidate call runs all of a step's products:
per layer the forward z_out_prev @ W, the gradient z_out_prev.T @ delta and, but for the first
layer, the error signal delta @ W.T, each into a preallocated output. GFLOP/s = 2 m n k summed over
them / the median time. Candidates, timed interleaved in one process (bench/_harness.compare):

  bp bf16          bp's kernel with the weights packed in the step (W and W.T once each, as the
                   engine must after every update: the packing is in the time)
  bp bf16 prepack  the same products with W and W.T already packed (the packing's cost is the
                   difference)
  bp bf16 fallback the portable path (sgemm on bf16-rounded copies), what a CPU without
                   AVX512-BF16 runs
  sgemm            float32, scipy's OpenBLAS through bp's own gemm wrapper (bpcore._blas)
  torch bf16       torch.matmul on bf16 tensors made beforehand (oneDNN; casts not timed)

The limit is the vdpbf16ps peak measured by a loop of 16 independent instructions on registers
(bpcore._bf16._dot_peak_loop; the best of many 2 ms bursts), times the thread count. bp is also
given as its best sample (GFLOP/s of the fastest round), which on a shared machine is the closest
to what it does on a core of its own.

    python bench/bf16_gemm.py                      # 1 and 2 threads, the three networks
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bf16_gemm.py
    python bench/bf16_gemm.py --quick              # the tiny configuration the tests run
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bp and bpcore from this tree, not an installed copy

import numpy as np  # noqa: E402
from _harness import compare, machine, machine_line, markdown_table, write_outputs  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bpcore import _bf16, _blas  # noqa: E402

NETWORKS = {
    "mnist": ([784, 256, 128, 10], 128),
    "deep": ([256] + [256] * 16 + [10], 64),
    "wide": ([1024, 4096, 4096, 1024], 256),
}
QUICK = {"tiny": ([33, 40, 7], 9)}


def step_products(sizes, batch, rng):
    """The operands of one step's products: per layer z_out_prev (batch, n_in), W (n_in, n_out),
    delta (batch, n_out) and the outputs z_in, grad_W, delta_prev."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
        layers.append({"z": f(batch, n_in), "W": f(n_in, n_out), "delta": f(batch, n_out),
                       "z_in": f(batch, n_out), "grad_W": f(n_in, n_out),
                       "delta_prev": f(batch, n_in)})
    flops = sum(2 * batch * L["W"].size * (2 if i == 0 else 3) for i, L in enumerate(layers))
    return layers, flops


def candidates(layers, n_threads, have_torch):
    def bf16_step(prepacked):
        def run():
            for i, L in enumerate(layers):
                W, WT = prepacked[i] if prepacked else (_bf16.pack_weight(L["W"], False, n_threads),
                                                        _bf16.pack_weight(L["W"], True, n_threads))
                _bf16._gemm(False, False, 1.0, L["z"], W, 0.0, L["z_in"], n_threads=n_threads)
                _bf16._gemm(True, False, 1.0, L["z"], L["delta"], 0.0, L["grad_W"],
                            n_threads=n_threads)
                if i:
                    _bf16._gemm(False, True, 1.0, L["delta"], WT, 0.0, L["delta_prev"],
                                n_threads=n_threads)
        return run

    def fallback_step():
        _bf16.set_path("fallback")
        try:
            bf16_step(None)()
        finally:
            _bf16.set_path("auto")

    def sgemm_step():
        for i, L in enumerate(layers):
            _blas._gemm(False, False, 1.0, L["z"], L["W"], 0.0, L["z_in"])
            _blas._gemm(True, False, 1.0, L["z"], L["delta"], 0.0, L["grad_W"])
            if i:
                _blas._gemm(False, True, 1.0, L["delta"], L["W"], 0.0, L["delta_prev"])

    out = {}
    if _bf16.cpu_path() == "avx512_bf16":
        packed = [(_bf16.pack_weight(L["W"], False, n_threads),
                   _bf16.pack_weight(L["W"], True, n_threads)) for L in layers]
        out["bp bf16"] = bf16_step(None)
        out["bp bf16 prepack"] = bf16_step(packed)
    out["bp bf16 fallback"] = fallback_step
    out["sgemm"] = sgemm_step
    if have_torch:
        import torch

        T = [{k: torch.from_numpy(v).to(torch.bfloat16) for k, v in L.items()} for L in layers]

        def torch_step():
            for i, L in enumerate(T):
                torch.matmul(L["z"], L["W"], out=L["z_in"])
                torch.matmul(L["z"].t(), L["delta"], out=L["grad_W"])
                if i:
                    torch.matmul(L["delta"], L["W"].t(), out=L["delta_prev"])
        out["torch bf16"] = torch_step
    return out


def dot_peak(bursts=60):
    """GFLOP/s of the vdpbf16ps loop on one thread, or None without the kernel: the best of many
    ~2 ms bursts, so that on a shared machine one of them runs on a core of its own."""
    if _bf16.cpu_path() != "avx512_bf16":
        return None
    reps = 10_000
    while True:
        t0 = time.perf_counter()
        _bf16._dot_peak_loop(reps)
        if time.perf_counter() - t0 > 0.002:
            break
        reps *= 2
    best = 0.0
    for _ in range(bursts):
        t0 = time.perf_counter()
        flops = _bf16._dot_peak_loop(reps)
        best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best


def cpu_time_table(nets, rng, repeat):
    """Each product kind of each network alone, 1 thread, timed in CPU seconds of the calling
    thread (time.thread_time): on a shared machine the wall clock of a long call includes the
    time other processes held its core; its CPU time does not. Medians of `repeat` calls."""
    rows = []
    for net, (sizes, batch) in nets.items():
        # the largest layer's three products: z_out_prev @ W, z_out_prev.T @ delta, delta @ W.T
        n_in, n_out = max(zip(sizes[:-1], sizes[1:]), key=lambda s: s[0] * s[1])
        for what, m, n, k, ta, tb in (("z_out_prev @ W", batch, n_out, n_in, False, False),
                                      ("z_out_prev.T @ delta", n_in, n_out, batch, True, False),
                                      ("delta @ W.T", batch, n_in, n_out, False, True)):
            A = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
            B = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
            C = np.zeros((m, n), np.float32)
            packed = _bf16.pack_weight(B, tb)
            calls = {"bp bf16 prepack": lambda ta=ta, tb=tb, A=A, P=packed, C=C:
                     _bf16._gemm(ta, tb, 1.0, A, P, 0.0, C),
                     "bp bf16": lambda ta=ta, tb=tb, A=A, B=B, C=C:
                     _bf16._gemm(ta, tb, 1.0, A, B, 0.0, C),
                     "sgemm": lambda ta=ta, tb=tb, A=A, B=B, C=C:
                     _blas._gemm(ta, tb, 1.0, A, B, 0.0, C)}
            number = max(1, int(2e8 / (2 * m * n * k)))  # ~1 ms of work per sample at 200 GFLOP/s
            times = {name: [] for name in calls}
            with threadpool_limits(1):
                for f in calls.values():
                    f()
                for _ in range(repeat):
                    for name, f in calls.items():
                        t0 = time.thread_time()
                        for _ in range(number):
                            f()
                        times[name].append((time.thread_time() - t0) / number)
            gf = {name: 2 * m * n * k / np.median(t) / 1e9 for name, t in times.items()}
            rows.append([net, what, f"{m}x{n}x{k}"] + [f"{gf[k_]:.0f}" for k_ in calls]
                        + [f"{gf['bp bf16 prepack'] / gf['sgemm']:.2f}x"])
    return markdown_table(["network", "product", "m x n x k", "bp bf16 prepack", "bp bf16",
                           "sgemm", "prepack / sgemm"], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    nets = QUICK if args.quick else {k: NETWORKS[k] for k in args.networks}
    repeat = 3 if args.quick else args.repeat
    try:
        import torch
        have_torch = True
    except ImportError:
        have_torch = False
    rng = np.random.default_rng(0)
    peak1 = dot_peak(5 if args.quick else 200)
    info = machine()
    rows, results = [], {"machine": info, "path": _bf16.kernel_path(), "peak_1thread": peak1}
    names = None
    for n_threads in args.threads:
        if have_torch:
            torch.set_num_threads(n_threads)
        for net, (sizes, batch) in nets.items():
            layers, flops = step_products(sizes, batch, rng)
            cands = candidates(layers, n_threads, have_torch)
            names = list(cands)
            with threadpool_limits(n_threads):
                timing = compare(cands, repeat=repeat, settle_s=0.0 if args.quick else 0.05)
            gf = {k: flops / v["median"] for k, v in timing.items()}  # flops / ns = GFLOP/s
            limit = peak1 * n_threads if peak1 else None
            row = [net, n_threads] + [f"{gf[k]:.0f}" for k in names]
            row.append(f"{gf['bp bf16'] / gf['sgemm']:.2f}x" if "bp bf16" in gf else "-")
            row.append(f"{gf['bp bf16'] / gf['torch bf16']:.2f}x"
                       if "bp bf16" in gf and "torch bf16" in gf else "-")
            # the best sample: what the code does when the machine lets it run alone
            best = flops / timing["bp bf16"]["min"] if "bp bf16" in timing else None
            row.append(f"{best:.0f}" if best else "-")
            row.append(f"{limit:.0f}" if limit else "-")
            row.append(f"{100 * gf['bp bf16'] / limit:.0f}% / {100 * best / limit:.0f}%"
                       if limit and best else "-")
            rows.append(row)
            results[f"{net}/{n_threads}"] = {
                "flops": flops, "gflops": gf,
                "median_ns": {k: v["median"] for k, v in timing.items()},
                "min_ns": {k: v["min"] for k, v in timing.items()}}
    header = (["network", "threads"] + [f"{k} GFLOP/s" for k in names]
              + ["bp bf16 / sgemm", "bp bf16 / torch", "bp bf16 best sample",
                 "vdpbf16ps peak", "bp bf16 / peak (median / best)"])
    table = (f"{machine_line(info)}\n\nbf16 path: {_bf16.kernel_path()}; vdpbf16ps peak, "
             f"1 thread: {peak1:.0f} GFLOP/s\n\n" if peak1 else
             f"{machine_line(info)}\n\nbf16 path: {_bf16.kernel_path()}\n\n")
    table += markdown_table(header, rows)
    if _bf16.cpu_path() == "avx512_bf16":
        table += ("\n\nEach product alone, 1 thread, GFLOP/s in CPU time (medians):\n\n"
                  + cpu_time_table(nets, rng, 3 if args.quick else 9))
    write_outputs(args.out, "bf16_gemm", table, results)


if __name__ == "__main__":
    main()
