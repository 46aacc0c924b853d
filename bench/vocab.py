"""What each optimizer and hidden activation costs on the mnist step, against Adam / relu
(issue 20).

Usage:
    python bench/vocab.py                 # 784-256-128-10, batch 128, float32, 1 thread
    python bench/vocab.py --quick         # a tiny configuration (what the tests could run)

Each candidate is `fit` for one epoch of `--steps` steps on the same synthetic data (random
784-wide float32 rows, 10 classes), a model built once per candidate and trained on across calls,
so the time is what a user's fit pays per step: the compiled epoch for the optimizers the engine
runs (SGD, Adam, AdamW), fit's Python step for RMSprop, Adagrad and Nadam (their fused kernels
called once a step), and the compiled epoch for every activation code. The candidates take turns
(bench/_harness.compare: interleaved rounds, medians); the table gives each median per step and
its ratio to the Adam / relu candidate of the same run.

Outputs: a markdown table on stdout and in <out>/vocab.md, <out>/vocab.json (default out:
bench/results).
"""

import argparse
import os
import sys

import numpy as np
from _harness import compare, machine, machine_line, markdown_table, write_outputs

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import bp  # noqa: E402

OPTIMIZERS = {
    "adam": lambda: bp.Adam(1e-3),
    "sgd momentum": lambda: bp.SGD(0.01, momentum=0.9),
    "rmsprop": lambda: bp.RMSprop(1e-3),
    "rmsprop centered momentum": lambda: bp.RMSprop(1e-3, momentum=0.9, centered=True),
    "adagrad": lambda: bp.Adagrad(0.01),
    "nadam": lambda: bp.Nadam(1e-3),
}
ACTIVATIONS = ["relu", "tanh", "gelu", "elu", "selu", "silu", "softplus", "mish", "hard_sigmoid"]


def candidate(widths, batch, steps, activation, optimizer, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch * steps, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], batch * steps)
    model = bp.Sequential([bp.Dense(w, activation) for w in widths[1:-1]]
                          + [bp.Dense(widths[-1], "softmax")], dtype="float32", seed=seed)
    model.compile(loss="cross_entropy", optimizer=optimizer)

    def run():
        model.fit(X, y, epochs=1, batch_size=batch, shuffle=False, verbose=0)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    widths, batch = [784, 256, 128, 10], 128
    if args.quick:
        widths, batch, args.steps, args.repeat = [20, 16, 8, 3], 16, 4, 2
    bp.set_num_threads(args.threads)
    candidates = {}
    for name, make in OPTIMIZERS.items():
        candidates[f"{name} / relu"] = candidate(widths, batch, args.steps, "relu", make())
    for act in ACTIVATIONS[1:]:
        candidates[f"adam / {act}"] = candidate(widths, batch, args.steps, act, bp.Adam(1e-3))
    results = compare(candidates, repeat=args.repeat, warmup=2, target_ns=1)
    base = results["adam / relu"]["median"]
    rows = [[name, f"{r['median'] / args.steps / 1e6:.3f}", f"{r['min'] / args.steps / 1e6:.3f}",
             f"{r['median'] / base:.3f}"] for name, r in results.items()]
    info = machine()
    table = (f"{machine_line(info)}\n\n"
             f"{'-'.join(map(str, widths))}, batch {batch}, float32, {args.threads} thread(s), "
             f"fit epochs of {args.steps} steps, {args.repeat} interleaved rounds\n\n"
             + markdown_table(["optimizer / hidden activation", "ms per step (median)",
                               "ms per step (min)", "vs adam / relu"], rows))
    write_outputs(args.out, "vocab", table,
                  {"machine": info, "widths": widths, "batch": batch, "steps": args.steps,
                   "threads": args.threads,
                   "results": {k: {"median": v["median"], "min": v["min"]}
                               for k, v in results.items()}})


if __name__ == "__main__":
    main()
