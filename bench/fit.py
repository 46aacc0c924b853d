"""Epochs per second of `fit`: bp against PyTorch (a DataLoader loop) and scikit-learn's
MLPClassifier, same architecture, plain SGD, shuffled mini-batches.

Usage:
    python bench/fit.py                  # digits (1797 x 64) and synthetic (60000 x 784)
    python bench/fit.py --threads 1 2 --epochs 5
    python bench/fit.py --quick          # tiny configuration (what the tests run)

Data sets and networks:
    digits     sklearn's load_digits, 64-128-64-10 relu / softmax cross-entropy, batch 32
    synthetic  60000 x 784 Gaussian features, 10 classes, 784-256-128-10 relu, batch 128

Each competitor is a long-lived worker process (tools and thread counts do not mix in one
process); the parent asks them in turn for one epoch at a time, so drifts of a shared machine hit
all alike. bp runs ``model.fit(X, y, epochs=1, ...)`` per epoch (validation and all, as a user
calls it): with no per-batch callback its whole mini-batch loop runs compiled. PyTorch runs the
usual ``for xb, yb in DataLoader(...)`` loop with zero_grad(set_to_none=True) / forward / loss /
backward / step. NumPy shuffles once an epoch and runs bench/train_step.py's idiomatic step on
each slice.
scikit-learn runs ``MLPClassifier.partial_fit`` (one epoch of its own mini-batch SGD).

Output: a markdown table (stdout and <out>/fit.md) and <out>/fit.json.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _harness import machine, machine_line, write_outputs  # noqa: E402
from train_step import Worker  # noqa: E402  (same protocol)

DATASETS = {
    "digits": {"widths": [64, 128, 64, 10], "batch": 32},
    "synthetic": {"widths": [784, 256, 128, 10], "batch": 128, "n": 60000},
}
QUICK = {
    "digits": {"widths": [64, 32, 10], "batch": 32},
    "synthetic": {"widths": [784, 32, 10], "batch": 128, "n": 1000},
}
LR = 0.01


def load(name, spec):
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return (X / 16.0).astype(np.float32), y.astype(np.int64)
    rng = np.random.default_rng(0)
    n, d, k = spec["n"], spec["widths"][0], spec["widths"][-1]
    centers = rng.standard_normal((k, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    X = centers[y] + rng.standard_normal((n, d)).astype(np.float32)
    return X, y.astype(np.int64)


def setup_bp(spec, X, y, threads):
    import bp

    bp.set_num_threads(threads)
    w = spec["widths"]
    layers = ([bp.Dense(u, activation="relu") for u in w[1:-1]]
              + [bp.Dense(w[-1], activation="softmax")])
    model = bp.Sequential(layers, dtype="float32", seed=0)
    opt = bp.SGD(LR)

    def epoch():
        model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=spec["batch"],
                  verbose=0)

    return epoch


def setup_numpy(spec, X, y, threads):
    """The NumPy loop a user writes: shuffle once per epoch, slice the batches, train_step's
    numpy_step on each (BLAS held to `threads` by the worker's environment)."""
    from train_step import numpy_step

    w = spec["widths"]
    rng = np.random.default_rng(0)
    Ws = [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32)
          for a, b in zip(w[:-1], w[1:])]
    bs = [np.zeros(b, np.float32) for b in w[1:]]
    Y = np.eye(w[-1], dtype=np.float32)[y]
    step = numpy_step(Ws, bs, "relu", "cross_entropy", LR)
    batch = spec["batch"]

    def epoch():
        perm = rng.permutation(X.shape[0])
        Xs, Ys = X[perm], Y[perm]
        for start in range(0, X.shape[0], batch):
            step(Xs[start:start + batch], Ys[start:start + batch])

    return epoch


def setup_torch(spec, X, y, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    w = spec["widths"]
    mods = []
    for i in range(len(w) - 1):
        mods.append(torch.nn.Linear(w[i], w[i + 1]))
        if i < len(w) - 2:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods)
    data = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(data, batch_size=spec["batch"], shuffle=True)
    crit = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def epoch():
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            crit(net(xb), yb).backward()
            opt.step()

    return epoch


def setup_sklearn(spec, X, y, threads):
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    w = spec["widths"]
    clf = MLPClassifier(hidden_layer_sizes=tuple(w[1:-1]), activation="relu", solver="sgd",
                        batch_size=spec["batch"], learning_rate_init=LR, momentum=0.0, alpha=0.0,
                        shuffle=True, random_state=0)
    classes = np.arange(w[-1])

    def epoch():
        clf.partial_fit(X, y, classes=classes)

    return epoch


SETUPS = {"bp": setup_bp, "numpy": setup_numpy, "torch": setup_torch, "sklearn": setup_sklearn}


def worker(name, threads, quick):
    out = sys.stdout
    sys.stdout = sys.stderr
    specs = QUICK if quick else DATASETS
    epochs = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["op"] == "setup":
                spec = specs[cmd["data"]]
                X, y = load(cmd["data"], spec)
                fn = SETUPS[name](spec, X, y, threads)
                fn()  # warm-up epoch
                epochs = {cmd["data"]: fn}
                reply = {"ok": True, "rows": int(X.shape[0])}
            elif cmd["op"] == "machine":
                import bpcore._blas  # noqa: F401  (loads the BLAS bp links, for threadpoolctl)

                reply = {"ok": True, "machine": machine()}
            elif cmd["op"] == "time":
                t = time.perf_counter()
                epochs[cmd["data"]]()
                reply = {"ok": True, "times": [time.perf_counter() - t]}
            else:
                reply = {"ok": False, "error": f"unknown op {cmd['op']}"}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


class FitWorker(Worker):
    def __init__(self, name, threads, quick):
        import subprocess

        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        root = os.path.dirname(HERE)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.name = name
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name,
               "--threads", str(threads)]
        if quick:
            cmd.append("--quick")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=root)


def run(args):
    specs = QUICK if args.quick else DATASETS
    peers = [p for p in args.peers
             if p in ("bp", "numpy") or importlib.util.find_spec(p) is not None]
    for p in set(args.peers) - set(peers):
        print(f"# {p} is not installed: skipped", file=sys.stderr)
    results = {"machine": {}, "rows": []}
    n_rows = {}
    for threads in args.threads:
        workers = {name: FitWorker(name, threads, args.quick) for name in peers}
        try:
            results["machine"][threads] = workers["bp"].ask(op="machine")["machine"]
            for data in args.data:
                live = {}
                for name, w in workers.items():
                    try:
                        n_rows[data] = w.ask(op="setup", data=data)["rows"]
                        live[name] = w
                    except RuntimeError as exc:
                        print(f"# {exc}: skipped", file=sys.stderr)
                times = {name: [] for name in live}
                for r in range(args.epochs):
                    names = list(live)[r % len(live):] + list(live)[:r % len(live)]
                    for name in names:
                        times[name] += live[name].ask(op="time", data=data)["times"]
                bp_med = float(np.median(times["bp"]))
                for name, t in times.items():
                    med = float(np.median(t))
                    results["rows"].append({
                        "data": data, "threads": threads, "impl": name, "median_s": med,
                        "min_s": float(np.min(t)), "epochs_per_s": 1 / med,
                        "best_epochs_per_s": 1 / float(np.min(t)), "bp_speedup": med / bp_med,
                        "n": len(t), "widths": specs[data]["widths"],
                        "steps": -(-n_rows[data] // specs[data]["batch"]),
                        "batch": specs[data]["batch"]})
                print(f"# done {data} {threads} thread(s)", file=sys.stderr)
        finally:
            for w in workers.values():
                w.close()
    return results


def markdown(results):
    lines = [f"{t} thread(s): " + machine_line(info) for t, info in results["machine"].items()]
    lines += ["",
             "| data | thr | impl | median s/epoch | min s/epoch | epochs/s (median) "
             "| us/step (median) | bp speed-up (peer/bp) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['data']} | {r['threads']} | {r['impl']} | {r['median_s']:.4f} "
                     f"| {r['min_s']:.4f} | {r['epochs_per_s']:.2f} "
                     f"| {r['median_s'] / r['steps'] * 1e6:.0f} "
                     f"| {'' if r['impl'] == 'bp' else '{:.2f}x'.format(r['bp_speedup'])} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--peers", nargs="+", default=["bp", "numpy", "torch", "sklearn"])
    ap.add_argument("--epochs", type=int, default=7, help="timed epochs per competitor")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.threads[0], args.quick)
        return 0
    if args.quick:
        args.epochs = min(args.epochs, 2)
    results = run(args)
    write_outputs(args.out, "fit", markdown(results), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
