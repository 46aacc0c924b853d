"""The caching study: why backpropagation is cheap, as networks grow wider and deeper.

For each network size this counts (exactly, bp.insight.operation_counts) and times the three
ways to get every gradient of one batch:

    (1) naive chain rule    a forward pass and a chain-rule product per parameter
    (2) forward caching     one cached forward pass, then each parameter's tangent on its own
    (3) backpropagation     one forward pass and one backward pass with cached deltas

and reports the ratios: backprop / forward pass (a small constant), naive / backprop and
forward / backprop (growing with the number of parameters P). Ways (1)-(3) are timed in NumPy
(float64, the implementations in bp/_ways.py, whose gradients are checked against each other);
the backprop / forward ratio is also timed with bp's compiled kernels. Cells whose count exceeds
the limits (--naive-limit, --forward-limit) are not run and are marked "-": nothing is
extrapolated.

Networks: "width n, depth d" is n inputs, d tanh hidden layers of n units and a softmax output
of n classes (cross-entropy), so P = (d + 1)(n + 1) n. Two sweeps: the width at depth 2, the
depth at width 16.

    python bench/caching.py             the full study (under a minute on one core)
    python bench/caching.py --quick     a tiny grid, for the tests (seconds)

Writes caching.csv, caching.md (the table) and caching.png (log-log plot) to --out
(default bench/results/, which git ignores).
"""

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

import bp  # noqa: E402
from bp import insight as I  # noqa: E402
from bp import losses as _losses  # noqa: E402

FULL = {"widths": [4, 8, 16, 32, 64, 128, 256], "depth_at": 2,
        "depths": [1, 2, 4, 8, 16, 32], "width_at": 16, "batch": 32}
QUICK = {"widths": [4, 8], "depth_at": 2, "depths": [1, 3], "width_at": 4, "batch": 8}


def network(width, depth, batch, dtype, seed=0):
    layers = [bp.Dense(width, activation="tanh") for _ in range(depth)]
    layers.append(bp.Dense(width, activation="softmax"))
    model = bp.Sequential(layers, dtype=dtype, seed=seed, input_dim=width)
    model.build()
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, width))
    y = rng.integers(0, width, batch)
    return model, X, y


def study(sweep, width, depth, args):
    model, X, y = network(width, depth, args.batch, args.dtype)
    Xm, Y, loss = I._inputs(model, X, y, "cross_entropy")
    net = I._Net(model, loss)
    X64 = Xm.astype(np.float64)
    N = X.shape[0]
    scale = _losses.default_scale(loss, N, Y.shape[1])
    counts = I.operation_counts(net.widths, N)
    row = {"sweep": sweep, "width": width, "depth": depth, "P": counts["n_params"], "N": N}
    for k in ("forward_pass", "backprop", "forward", "naive"):
        row[f"count_{k}"] = counts[k]

    compiled = I._Compiled(model, Xm, Y, loss, bp.get_num_threads())
    rep = args.repeat
    row["t_bp_forward_pass"] = I.measure(compiled.forward, args.budget, rep)
    row["t_bp_backprop"] = I.measure(compiled.backprop, args.budget, rep)
    row["t_forward_pass"] = I.measure(lambda: I._forward_pass(net, X64), args.budget, rep)
    t0 = time.perf_counter()
    ref = I.backprop_gradients(net, X64, Y, scale)
    row["t_backprop"] = I.measure(lambda: I.backprop_gradients(net, X64, Y, scale), args.budget,
                                  rep, first=time.perf_counter() - t0)
    compiled.backprop()
    worst = float(np.max(np.abs(compiled.flat_gradient() - ref)))
    limits = {"forward": args.forward_limit, "naive": args.naive_limit}
    for way, fn in (("forward", I.forward_gradients), ("naive", I.naive_gradients)):
        row[f"t_{way}"] = None
        if counts[way] > limits[way]:
            continue
        t0 = time.perf_counter()
        g = fn(net, X64, Y, scale)
        row[f"t_{way}"] = I.measure(lambda fn=fn: fn(net, X64, Y, scale), args.budget, rep,
                                    first=time.perf_counter() - t0)
        worst = max(worst, float(np.max(np.abs(g - ref))))
    row["max_abs_diff"] = worst
    tol = 1e-4 if args.dtype == "float32" else 1e-10
    row["agree"] = worst <= tol * max(1.0, float(np.max(np.abs(ref))))
    return row


def ratios(row):
    """The measured and counted ratios of one row (None where a way was not run)."""
    def div(a, b):
        return None if a is None or b is None else a / b

    return {
        "bp/fwd count": row["count_backprop"] / row["count_forward_pass"],
        "bp/fwd time (bp kernels)": div(row["t_bp_backprop"], row["t_bp_forward_pass"]),
        "bp/fwd time (NumPy)": div(row["t_backprop"], row["t_forward_pass"]),
        "naive/bp count": row["count_naive"] / row["count_backprop"],
        "naive/bp time": div(row["t_naive"], row["t_backprop"]),
        "fwd-mode/bp count": row["count_forward"] / row["count_backprop"],
        "fwd-mode/bp time": div(row["t_forward"], row["t_backprop"]),
    }


def _cell(v, digits=3):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _time(v):
    return "-" if v is None else I._fmt_time(v)


def markdown(rows, args):
    head = ["sweep", "width", "depth", "P", "bp/fwd count", "bp/fwd time (bp kernels)",
            "bp/fwd time (NumPy)", "naive/bp count", "naive/bp time", "fwd-mode/bp count",
            "fwd-mode/bp time", "bp kernels: fwd, backprop", "NumPy: backprop, fwd-mode, naive"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        r = ratios(row)
        cells = [row["sweep"], str(row["width"]), str(row["depth"]), f"{row['P']:,}"]
        cells += [_cell(r[k]) for k in head[4:11]]
        cells.append(f"{_time(row['t_bp_forward_pass'])}, {_time(row['t_bp_backprop'])}")
        cells.append(f"{_time(row['t_backprop'])}, {_time(row['t_forward'])}, "
                     f"{_time(row['t_naive'])}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Batch N = {args.batch}, bp kernels in {args.dtype}, NumPy ways in float64, "
                 f"{bp.get_num_threads()} thread(s); times are the best of repeated runs. "
                 f"\"-\": not run (naive count > {args.naive_limit:.0e} or forward-caching count "
                 f"> {args.forward_limit:.0e} multiply-adds).")
    return "\n".join(lines)


def plot(rows, path, grid):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    styles = {"width": ("-", "o"), "depth": ("--", "s")}
    colors = {"forward_pass": "0.4", "backprop": "tab:green", "forward": "tab:orange",
              "naive": "tab:red", "bp_backprop": "tab:blue", "bp_forward_pass": "tab:cyan"}
    names = {"forward_pass": "forward pass", "backprop": "(3) backprop",
             "forward": "(2) forward caching", "naive": "(1) naive",
             "bp_backprop": "backprop, bp kernels", "bp_forward_pass": "forward, bp kernels"}
    for sweep, (ls, marker) in styles.items():
        sub = [r for r in rows if r["sweep"] == sweep]
        if not sub:
            continue
        P = np.array([r["P"] for r in sub], float)
        for way in ("naive", "forward", "backprop", "forward_pass"):
            axes[0].loglog(P, [r[f"count_{way}"] for r in sub], ls, marker=marker, ms=4,
                           color=colors[way], label=f"{names[way]} ({sweep} sweep)")
        for way in ("naive", "forward", "backprop", "bp_backprop", "bp_forward_pass"):
            pts = [(p, r[f"t_{way}"]) for p, r in zip(P, sub) if r[f"t_{way}"] is not None]
            if pts:
                axes[1].loglog(*zip(*pts), ls, marker=marker, ms=4, color=colors[way],
                               label=f"{names[way]} ({sweep})")
        for key, color, label in (("naive/bp time", colors["naive"], "naive / backprop"),
                                  ("fwd-mode/bp time", colors["forward"], "forward / backprop"),
                                  ("bp/fwd time (bp kernels)", colors["bp_backprop"],
                                   "backprop / forward pass (bp kernels)")):
            pts = [(p, ratios(r)[key]) for p, r in zip(P, sub) if ratios(r)[key] is not None]
            if pts:
                axes[2].loglog(*zip(*pts), ls, marker=marker, ms=4, color=color,
                               label=f"{label} ({sweep})")
        axes[2].loglog(P, [ratios(r)["bp/fwd count"] for r in sub], ls, color="0.6", lw=1,
                       label=f"backprop / forward pass, counted ({sweep})")
    axes[0].set(title="multiply-adds (exact counts)", xlabel="parameters P", ylabel="multiply-adds")
    axes[1].set(title="measured time per batch", xlabel="parameters P", ylabel="seconds")
    axes[2].set(title="measured cost ratios", xlabel="parameters P", ylabel="ratio")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Why backpropagation is cheap: solid = width sweep (depth {grid['depth_at']}), "
                 f"dashed = depth sweep (width {grid['width_at']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    try:  # a 64-colour palette keeps the committed copy small; the plot has few colours anyway
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)
    except ImportError:
        pass
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny grid (seconds), for tests")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--batch", type=int, default=None, help="batch size N (default 32)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of bp's kernels (the NumPy ways run in float64)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timing per measurement (default 0.2; 0.01 quick)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timing runs per measurement; the best is kept (the machine may be "
                             "shared: the minimum is the least disturbed run)")
    parser.add_argument("--threads", type=int, default=1, help="threads for bp and BLAS")
    parser.add_argument("--naive-limit", type=float, default=1e10,
                        help="skip the naive way above this many multiply-adds (default 1e10, "
                             "a few seconds in NumPy)")
    parser.add_argument("--forward-limit", type=float, default=2e10,
                        help="skip forward caching above this many multiply-adds (default 2e10)")
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else FULL
    args.batch = args.batch or grid["batch"]
    args.budget = args.budget if args.budget is not None else (0.01 if args.quick else 0.2)
    bp.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    sizes = [("width", w, grid["depth_at"]) for w in grid["widths"]]
    sizes += [("depth", grid["width_at"], d) for d in grid["depths"]]
    rows = []
    started = time.perf_counter()
    for sweep, width, depth in sizes:
        row = study(sweep, width, depth, args)
        rows.append(row)
        r = ratios(row)
        print(f"{sweep:>5} sweep: width {width:>3}, depth {depth:>2}, P = {row['P']:>7,}:  "
              f"backprop/forward {r['bp/fwd time (bp kernels)']:.2f} (bp kernels), "
              f"{_cell(r['bp/fwd time (NumPy)'])} (NumPy), {r['bp/fwd count']:.2f} (counted);  "
              f"naive/backprop {_cell(r['naive/bp time'])} (counted {_cell(r['naive/bp count'])});"
              f"  forward/backprop {_cell(r['fwd-mode/bp time'])} "
              f"(counted {_cell(r['fwd-mode/bp count'])})"
              + ("" if row["agree"] else "   GRADIENTS DISAGREE"), flush=True)
    with open(os.path.join(args.out, "caching.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows, args)
    with open(os.path.join(args.out, "caching.md"), "w") as f:
        f.write(table + "\n")
    png = os.path.join(args.out, "caching.png")
    if plot(rows, png, grid):
        print(f"plot: {png} ({os.path.getsize(png) / 1024:.0f} KB)")
    print(table)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
