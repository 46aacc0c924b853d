"""What the training metrics and per-step schedules cost a fit: the digits fit (1797 x 64,
64-128-64-10 relu / softmax cross-entropy, batch 32, SGD, float32, one epoch per call) with
metrics=["accuracy", "auc"] against none, and with a per-step schedule against a constant rate.

Usage:
    python bench/metrics.py [--threads 1] [--repeat 15] [--out bench/results]
    python bench/metrics.py --quick        # tiny configuration (what the tests run)

The candidates are timed interleaved in one process (bench/_harness.py): medians and ratios to
"none". "every step, no metric" returns to Python after every step with nothing to compute (an
empty on_batch_end), which is how today's engine lets the metrics see each batch's f_out:
the difference between it and "none" is the cost of leaving the compiled epoch each step, the
rest the metric updates themselves (bpcore/_metrics.pyx).
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _harness import compare, machine, machine_line, markdown_table, write_outputs  # noqa: E402

import bp  # noqa: E402


def digits(quick):
    if quick:
        rng = np.random.default_rng(0)
        return rng.random((300, 64)).astype(np.float32), rng.integers(0, 10, 300)
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    bp.set_num_threads(args.threads)
    X, y = digits(args.quick)
    widths = [32] if args.quick else [128, 64]

    def model():
        return bp.Sequential([*(bp.Dense(u, activation="relu") for u in widths),
                              bp.Dense(10, activation="softmax")], seed=0)

    steps = -(-len(X) // 32)
    runs = {
        "none": ({}, bp.SGD(0.01)),
        "accuracy": ({"metrics": ["accuracy"]}, bp.SGD(0.01)),
        "accuracy, auc": ({"metrics": ["accuracy", "auc"]}, bp.SGD(0.01)),
        "every step, no metric": (
            {"callbacks": [bp.LambdaCallback(on_batch_end=lambda batch, logs: None)]},
            bp.SGD(0.01)),
        "per-step schedule": ({}, bp.SGD(bp.schedules.WarmupCosine(0.01, steps, 10**9))),
    }
    candidates = {}
    for name, (kwargs, opt) in runs.items():
        m = model()
        m.fit(X, y, epochs=1, batch_size=32, optimizer=opt, verbose=0, **kwargs)
        candidates[name] = (lambda m=m, kwargs=kwargs: m.fit(X, y, epochs=1, batch_size=32,
                                                             verbose=0, **kwargs))
    # several fits a sample (about 0.1 s): a burst of load on a shared machine hits one sample
    res = compare(candidates, repeat=3 if args.quick else args.repeat,
                  target_ns=0 if args.quick else 100_000_000)
    base = res["none"]["median"]
    rows = [[name, f"{r['median'] / 1e6:.2f}", f"{r['median'] / base:.3f}"]
            for name, r in res.items()]
    info = machine()
    table = (f"digits fit, 1 epoch, batch 32, float32, {args.threads} thread(s); "
             f"{machine_line(info)}\n\n" + markdown_table(["fit", "ms (median)", "vs none"],
                                                          rows))
    write_outputs(args.out, "metrics", table,
                  {"machine": info, "results": {k: {"median": v["median"], "min": v["min"]}
                                                for k, v in res.items()}})


if __name__ == "__main__":
    main()
