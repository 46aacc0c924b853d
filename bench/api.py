"""One training step through each of bp's entry points, against the step inside ``fit``.

    python bench/api.py                     digits network, 32-row batch, float32, 1 and 2 threads
    python bench/api.py --dtypes float32 float64 --threads 1
    python bench/api.py --quick             a tiny configuration (what the tests run)

The network is the digits one (64-128-64-10, relu, softmax / cross-entropy, plain SGD) and every
entry point trains on the same 32 rows:

    compiled step        the engine's train_step alone (no checks: the floor)
    fit step             model.fit(X, y, epochs=1, batch_size=32) on the 1797 digits rows,
                         divided by its 57 steps (shuffling, gathering, guard and all)
    partial_fit          model.partial_fit(X32, y32): one call, one step
    zero_grad/backward/step   the PyTorch-style loop, three calls
    gradients            model.gradients(X32, y32): forward and backward, no update

Each is reported as a multiple of fit's step (the issue's target: within 1.5x). All candidates are
timed in one process, interleaved, medians over repeats (bench/_harness.py).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bp and bpcore from this tree, not an installed copy

import numpy as np  # noqa: E402
from _harness import compare, machine, machine_line, markdown_table, us, write_outputs  # noqa: E402

import bp  # noqa: E402

LR = 0.01


def digits(dtype, quick):
    """The digits data (sklearn's load_digits, scaled to [0, 1]); random data of its shape
    when scikit-learn is missing or for --quick."""
    try:
        if quick:
            raise ImportError
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return (X / 16.0).astype(dtype), y
    except ImportError:
        rng = np.random.default_rng(0)
        n = 256 if quick else 1797
        return rng.uniform(0, 1, (n, 64)).astype(dtype), rng.integers(0, 10, n)


def compiled_step(model, X, y, lr):
    """The engine's train_step over the model's buffers for the batch (X, y): the only place this
    benchmark touches bp's internals (bench/train_step.py uses it too)."""
    import bpcore
    from bp import losses

    loss = model.loss or "cross_entropy"
    X = np.ascontiguousarray(X, model.dtype)
    Y = losses.prepare_targets(loss, y, X.shape[0], model.layers[-1].units, model.dtype)
    passes = model._passes
    net = passes.engine()
    ws = passes.workspace(X.shape[0])
    spec = bp.SGD(lr)._engine_spec()
    code = bpcore.LOSSES[loss]
    scale = losses.default_scale(loss, *Y.shape)
    nt = passes.step_threads(X.shape[0], bp.get_num_threads())  # fit's thread policy
    bp._threads.hold_blas(nt)

    count = iter(range(1 << 62))  # the step count: each step draws new dropout masks

    def step():
        net.bind(ws)
        net.train_step(X, Y, None, code, scale, spec, lr, next(count), nt)

    return step


def candidates(dtype, threads, quick):
    bp.set_num_threads(threads)
    X, y = digits(dtype, quick)
    widths = [64, 128, 64, 10] if not quick else [64, 32, 10]
    rows = 32

    def model():
        layers = [bp.Dense(u, activation="relu") for u in widths[1:-1]]
        layers.append(bp.Dense(widths[-1], activation="softmax"))
        m = bp.Sequential(layers, dtype=dtype, seed=0)
        m.compile(loss="cross_entropy", optimizer=bp.SGD(LR))
        m.fit(X, y, epochs=1, batch_size=rows, verbose=0)
        return m

    steps_per_epoch = -(-X.shape[0] // rows)
    Xb, yb = X[:rows].copy(), y[:rows].copy()
    m_fit, m_pf, m_loop, m_grad, m_engine = (model() for _ in range(5))

    def fit_step():
        m_fit.fit(X, y, epochs=1, batch_size=rows, verbose=0)

    def loop():
        m_loop.zero_grad()
        m_loop.backward(Xb, yb)
        m_loop.step()

    engine = compiled_step(m_engine, Xb, yb, LR)
    bp.set_num_threads(threads)  # compiled_step held BLAS to fit's step count; give it back
    return {
        "compiled step": (engine, 1),
        "fit step": (fit_step, steps_per_epoch),
        "partial_fit": (lambda: m_pf.partial_fit(Xb, yb), 1),
        "zero_grad/backward/step": (loop, 1),
        "gradients": (lambda: m_grad.gradients(Xb, yb), 1),
    }


def run(args):
    rows = []
    info = machine()
    for threads in args.threads:
        for dtype in args.dtypes:
            cands = candidates(dtype, threads, args.quick)
            res = compare({name: fn for name, (fn, _) in cands.items()}, repeat=args.repeat)
            per_step = {name: {k: res[name][k] / steps for k in ("median", "min")}
                        for name, (_, steps) in cands.items()}
            base = per_step["fit step"]["median"]
            for name, t in per_step.items():
                rows.append({"dtype": dtype, "threads": threads, "entry": name,
                             "median_ns": t["median"], "min_ns": t["min"],
                             "x_fit_step": t["median"] / base})
    info["load_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"machine": info, "rows": rows}


def markdown(results):
    table = markdown_table(
        ["dtype", "thr", "entry point", "median us/step", "min us/step", "x fit's step"],
        [[r["dtype"], r["threads"], r["entry"], us(r["median_ns"]), us(r["min_ns"]),
          f"{r['x_fit_step']:.2f}x"] for r in results["rows"]])
    return ("Digits network 64-128-64-10, SGD, one 32-row step per call\n"
            + machine_line(results["machine"]) + "\n\n" + table)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtypes", nargs="+", default=["float32"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.threads = 3, [1]
    results = run(args)
    write_outputs(args.out, "api", markdown(results), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
