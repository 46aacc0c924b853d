"""Fit time and held-out score: bp.sklearn against scikit-learn, the same estimator parameters.

Usage:
    python bench/sklearn_mlp.py               # the full table (a few minutes)
    python bench/sklearn_mlp.py --threads 1 2 --repeat 5
    python bench/sklearn_mlp.py --quick       # tiny configuration (what the tests run)

(Not named sklearn.py: the other benchmarks put bench/ on sys.path, where a sklearn.py would
stand in for scikit-learn.)

Problems (75/25 train/test split, random_state 0 everywhere, float64):
    digits      load_digits / 16, hidden (100,): adam and sgd (max_iter 50), lbfgs (max_iter 200)
    synthetic   make_classification 20000 x 100, five classes, hidden (256, 128), adam, 10 epochs
    regression  make_regression 20000 x 50, hidden (128, 64), adam, 10 epochs
    sparse      20000 x 50000 CSR, 1% dense, tf-idf-like values, two classes from a linear rule,
                hidden (64,), adam, 3 epochs

Both estimators get the same parameters (scikit-learn's defaults otherwise), so they train the
same model (tests/test_sklearn_equivalence.py): the scores agree and the ratio of fit times is the
whole comparison. Fits are interleaved (scikit-learn, bp, bp, scikit-learn, ...) and the median of
`--repeat` fits is reported. Threads: scikit-learn's BLAS is held to the thread count with
threadpoolctl (it has no other threads), bp gets n_threads.

Output: a markdown table (stdout and <out>/sklearn.md) and <out>/sklearn.json.
"""

import argparse
import os
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bp and bpcore from this tree, not an installed copy

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sklearn import neural_network as skn  # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import bp.sklearn as bps  # noqa: E402

sys.path.insert(0, HERE)
from _harness import machine, machine_line, write_outputs  # noqa: E402


def sparse_text(n, d, density, seed=0):
    """A tf-idf-like CSR matrix (non-negative, rows scaled to unit norm) and labels from a
    sparse linear rule on it."""
    rng = np.random.default_rng(seed)
    k = int(density * d)   # non-zeros per row (a repeated column adds up: a few fewer)
    cols = rng.integers(0, d, (n, k))
    X = sp.csr_matrix((rng.exponential(1.0, n * k), cols.ravel(), np.arange(0, n * k + 1, k)),
                      shape=(n, d))
    X.sum_duplicates()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1))).ravel()
    X = sp.diags(1 / np.maximum(norms, 1e-12)) @ X
    coef = rng.standard_normal(d)
    score = X @ coef
    return X.tocsr(), (score > np.median(score)).astype(int)


def problems(quick):
    """(name, estimator kind, params, X, y) for each row of the table."""
    digits = load_digits()
    Xd, yd = digits.data / 16.0, digits.target
    if quick:
        Xd, yd = Xd[:300], yd[:300]
    n = 600 if quick else 20000
    Xc, yc = make_classification(n, 100, n_informative=40, n_classes=5, random_state=0)
    Xr, yr = make_regression(n, 50, n_informative=30, noise=1.0, random_state=0)
    Xs, ys = sparse_text(n, 2000 if quick else 50000, 0.01)
    it = (lambda k: 2) if quick else (lambda k: k)
    base = {"random_state": 0}
    return [
        ("digits", "clf", {**base, "solver": "adam", "max_iter": it(50)}, Xd, yd),
        ("digits", "clf", {**base, "solver": "sgd", "max_iter": it(50)}, Xd, yd),
        ("digits", "clf", {**base, "solver": "lbfgs", "max_iter": it(200)}, Xd, yd),
        ("synthetic 20000x100", "clf", {**base, "hidden_layer_sizes": (256, 128),
                                        "max_iter": it(10)}, Xc, yc),
        ("regression 20000x50", "reg", {**base, "hidden_layer_sizes": (128, 64),
                                        "max_iter": it(10)}, Xr, yr / yr.std()),
        ("sparse 20000x50000 1%", "clf", {**base, "hidden_layer_sizes": (64,),
                                          "max_iter": it(3)}, Xs, ys),
    ]


def timed_fit(cls, params, X, y, threads, peer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if peer:
            with threadpool_limits(limits=threads, user_api="blas"):
                t0 = time.perf_counter()
                model = cls(**params).fit(X, y)
                return time.perf_counter() - t0, model
        t0 = time.perf_counter()
        model = cls(**params, n_threads=threads).fit(X, y)
        return time.perf_counter() - t0, model


def run(args):
    rows = []
    for name, kind, params, X, y in problems(args.quick):
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25,
                                                            random_state=0)
        peer, ours = ((skn.MLPClassifier, bps.MLPClassifier) if kind == "clf"
                      else (skn.MLPRegressor, bps.MLPRegressor))
        for threads in args.threads:
            times = {"scikit-learn": [], "bp": []}
            models = {}
            for r in range(args.repeat):
                order = ["scikit-learn", "bp"] if r % 2 == 0 else ["bp", "scikit-learn"]
                for who in order:
                    cls = peer if who == "scikit-learn" else ours
                    t, models[who] = timed_fit(cls, params, X_train, y_train, threads,
                                               who == "scikit-learn")
                    times[who].append(t)
            med = {who: statistics.median(ts) for who, ts in times.items()}
            scores = {who: m.score(X_test, y_test) for who, m in models.items()}
            rows.append({"problem": name, "solver": params.get("solver", "adam"),
                         "hidden": str(params.get("hidden_layer_sizes", (100,))),
                         "n_iter": models["bp"].n_iter_, "threads": threads,
                         "sklearn_s": med["scikit-learn"], "bp_s": med["bp"],
                         "speedup": med["scikit-learn"] / med["bp"],
                         "sklearn_score": scores["scikit-learn"], "bp_score": scores["bp"]})
            print(f"{name} {rows[-1]['solver']} thr {threads}: scikit-learn "
                  f"{med['scikit-learn']:.3f} s, bp {med['bp']:.3f} s "
                  f"({rows[-1]['speedup']:.1f}x); scores {scores['scikit-learn']:.4f} / "
                  f"{scores['bp']:.4f}", file=sys.stderr)
    return rows


def markdown(results):
    lines = [f"Machine: {machine_line(results['machine'])}; float64; median of "
             f"{results['repeat']} interleaved fits", "",
             "| problem | solver | hidden | epochs/iters | thr | scikit-learn s | bp s "
             "| speed-up | score scikit-learn | score bp |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['problem']} | {r['solver']} | {r['hidden']} | {r['n_iter']} "
                     f"| {r['threads']} | {r['sklearn_s']:.3f} | {r['bp_s']:.3f} "
                     f"| {r['speedup']:.1f}x | {r['sklearn_score']:.4f} | {r['bp_score']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    rows = run(args)  # (machine() after the fits: threadpoolctl then sees every BLAS loaded)
    results = {"machine": machine(), "repeat": args.repeat, "rows": rows}
    write_outputs(args.out, "sklearn", markdown(results), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
