"""Inference: bp's predict against ONNX Runtime, PyTorch, scikit-learn and NumPy, same weights.

Two networks, float32, relu hidden layers and a softmax output: digits 64-128-64-10 and the mnist
shape 784-256-128-10. Every peer computes the same probabilities from the same weights:

    bp        model.predict(X)                        (and with out=, a buffer kept by the caller)
    onnxrt    InferenceSession(bp.to_onnx(model)).run, intra_op_num_threads = the thread count
    torch     bp.to_torch(model)(torch.from_numpy(X)) under torch.inference_mode()
    sklearn   MLPClassifier.predict_proba, its coefs_ and intercepts_ set to bp's weights
    numpy     the forward pass written as a NumPy user writes it (matmul, maximum, a stable softmax)
    products  the network's matrix products alone, through the BLAS bp calls, into buffers made
              beforehand: the floor for any implementation that calls this BLAS

Latency: one row, many calls (10000 by default), the median and the 99th percentile of the
per-call times; throughput: rows per second on 64, 4096 and 65536 rows (medians of interleaved
samples). Everything runs in this process, interleaved (each round times every peer once, in an
order that rotates), so load on a shared machine hits all alike; quote ratios from one run.
Printed with the CPU, the BLAS libraries and kernels (threadpoolctl), the threads and the dtype.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _harness import compare, machine, machine_line, markdown_table, write_outputs  # noqa: E402

import bp  # noqa: E402
from bpcore import _blas  # noqa: E402

NETWORKS = {"digits": (64, 128, 64, 10), "mnist": (784, 256, 128, 10)}
PEERS = ("bp", "bp out=", "onnxrt", "torch", "sklearn", "numpy", "products")


def make_model(widths, seed=0):
    model = bp.Sequential([bp.Dense(w, "relu") for w in widths[1:-1]]
                          + [bp.Dense(widths[-1], "softmax")], dtype="float32", seed=seed)
    model.build(widths[0])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.b = rng.normal(0, 0.1, layer.units)
    return model


def setup_peers(model, X, threads, peers):
    """{name: zero-argument callable computing the probabilities of X}, with `threads` threads."""
    from threadpoolctl import threadpool_limits

    n, widths = X.shape[0], [model.input_dim] + [d.units for d in model.layers]
    calls = {}
    if "bp" in peers:
        calls["bp"] = lambda: model.predict(X)
    if "bp out=" in peers:
        out = np.empty((n, widths[-1]), np.float32)
        calls["bp out="] = lambda: model.predict(X, out=out)
    if "onnxrt" in peers and importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(bp.to_onnx(model).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        feed = {"X": X}
        calls["onnxrt"] = lambda: session.run(None, feed)[0]
    if "torch" in peers and importlib.util.find_spec("torch"):
        import torch
        module, tX = bp.to_torch(model), torch.from_numpy(X)

        def run_torch():
            with torch.inference_mode():
                return module(tX).numpy()
        calls["torch"] = run_torch
    if "sklearn" in peers and importlib.util.find_spec("sklearn"):
        calls["sklearn"] = _sklearn_peer(model, X)
    Ws = [d.W for d in model.layers]
    bs = [d.b for d in model.layers]
    if "numpy" in peers:
        def run_numpy():
            z = X
            for W, b in zip(Ws[:-1], bs[:-1]):
                z = np.maximum(z @ W + b, 0)
            z = z @ Ws[-1] + bs[-1]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        calls["numpy"] = run_numpy
    if "products" in peers:
        buffers = [np.empty((n, w), np.float32) for w in widths[1:]]

        def run_products():
            z = X
            for W, buf in zip(Ws, buffers):
                _blas._gemm(False, False, 1.0, z, W, 0.0, buf, "blas")
                z = buf
            return z
        calls["products"] = run_products

    # bp holds the BLAS pools to its own count; torch has its own; the rest get threadpoolctl's
    # limit once, here (a limit per call would time threadpoolctl)
    threadpool_limits(limits=threads)
    bp.set_num_threads(threads)
    if "torch" in calls:
        import torch
        torch.set_num_threads(threads)
    return calls


def _sklearn_peer(model, X):
    import warnings

    from sklearn.neural_network import MLPClassifier
    widths = [model.input_dim] + [d.units for d in model.layers]
    clf = MLPClassifier(hidden_layer_sizes=widths[1:-1], max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(np.random.default_rng(0).normal(size=(widths[-1], widths[0])).astype(np.float32),
                np.arange(widths[-1]))
    clf.coefs_ = [d.W.copy() for d in model.layers]
    clf.intercepts_ = [d.b.copy() for d in model.layers]
    return lambda: clf.predict_proba(X)


def check_agreement(calls, ref):
    for name, fn in calls.items():
        if name == "products":
            continue
        got = np.asarray(fn())
        if not np.allclose(got, ref, rtol=1e-4, atol=1e-5):
            raise AssertionError(f"{name} disagrees with bp: max |diff| {np.abs(got - ref).max()}")


def latency(calls, n_calls, chunk=500):
    """Per-call times (ns) of n_calls calls each, interleaved in chunks with a rotating order."""
    names = list(calls)
    times = {name: [] for name in names}
    for fn in calls.values():
        for _ in range(50):
            fn()
    perf = time.perf_counter_ns
    for r in range(max(1, n_calls // chunk)):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, out = calls[name], times[name]
            for _ in range(chunk):
                t0 = perf()
                fn()
                out.append(perf() - t0)
    return {name: {"median": statistics.median(t), "p99": float(np.percentile(t, 99))}
            for name, t in times.items()}


def run(args):
    versions = {"numpy": np.__version__}
    for mod in ("scipy", "torch", "onnxruntime", "sklearn"):
        if importlib.util.find_spec(mod) is not None:
            versions[mod] = __import__(mod).__version__
    results = {"machine": machine(), "blas": blas_info(), "versions": versions, "rows": []}
    rng = np.random.default_rng(1)
    for net in args.networks:
        model = make_model(NETWORKS[net])
        for threads in args.threads:
            for rows in args.rows:
                X = rng.normal(size=(rows, NETWORKS[net][0])).astype(np.float32)
                calls = setup_peers(model, X, threads, args.peers)
                check_agreement(calls, model.predict(X))
                if rows == 1:
                    timed = latency(calls, args.calls)
                else:
                    timed = compare(calls, repeat=args.repeat, settle_s=0.02 if threads > 1 else 0)
                for name, t in timed.items():
                    results["rows"].append({
                        "network": net, "threads": threads, "rows": rows, "impl": name,
                        "median_us": t["median"] / 1e3, "p99_us": t.get("p99", np.nan) / 1e3,
                        "rows_per_s": rows / (t["median"] / 1e9)})
                print(f"{net} {threads} thread(s) {rows} rows: " + ", ".join(
                    f"{name} {t['median'] / 1e3:.1f} us" for name, t in timed.items()), flush=True)
    return results


def blas_info():
    from threadpoolctl import threadpool_info
    return [f"{d['internal_api']} {d.get('version')} {d.get('architecture')} "
            f"({os.path.basename(d['filepath'])})" for d in threadpool_info()
            if d["user_api"] == "blas"]


def markdown(results):
    m = results["machine"]
    head = [machine_line(m) + "; float32",
            "BLAS libraries: " + "; ".join(results["blas"]),
            "versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
            ""]
    rows = []
    for key in dict.fromkeys((r["network"], r["threads"], r["rows"]) for r in results["rows"]):
        sel = {r["impl"]: r for r in results["rows"]
               if (r["network"], r["threads"], r["rows"]) == key}
        bp_us = sel["bp"]["median_us"]
        for impl, r in sel.items():
            p99 = "" if np.isnan(r["p99_us"]) else f"{r['p99_us']:.1f}"
            ratio = "" if impl == "bp" else f"{r['median_us'] / bp_us:.2f}x"
            rows.append([*map(str, key), impl, f"{r['median_us']:.1f}", p99,
                         f"{r['rows_per_s']:.3g}", ratio])
    return "\n".join(head) + markdown_table(
        ["network", "threads", "rows", "impl", "median us", "p99 us", "rows/s",
         "time / bp's"], rows)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    panels = list(dict.fromkeys((r["network"], r["threads"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (net, threads) in zip(axes[0], panels):
        sel = [r for r in rows if (r["network"], r["threads"]) == (net, threads)]
        sizes = list(dict.fromkeys(r["rows"] for r in sel))
        impls = list(dict.fromkeys(r["impl"] for r in sel))
        width = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            vals = [next((r["median_us"] / r["rows"] for r in sel
                          if r["rows"] == n and r["impl"] == impl), np.nan) for n in sizes]
            ax.bar(np.arange(len(sizes)) + k * width, vals, width, label=impl)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(sizes)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{n} rows" for n in sizes])
        ax.set_ylabel("median us per row")
        ax.set_title(f"{net}, float32, {threads} thread(s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rows", nargs="+", type=int, default=[1, 64, 4096, 65536])
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--calls", type=int, default=10000, help="one-row calls per peer")
    ap.add_argument("--repeat", type=int, default=9, help="interleaved samples per batch size")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (for tests)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.networks, args.rows = ["digits"], [1, 64]
        args.calls, args.repeat = 500, 3
    results = run(args)
    write_outputs(args.out, "predict", markdown(results), results)
    plot(results, os.path.join(args.out, "predict.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
