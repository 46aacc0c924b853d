"""One SGD training step (forward, loss, backward, update): bp against the NumPy loop a user
writes, PyTorch and JAX, and against the step's own BLAS limit.

Usage:
    python bench/train_step.py                       # every shape, float32 and float64,
                                                     # 1 and 2 threads
    python bench/train_step.py --shapes mnist deep --dtypes float32 --threads 1
    python bench/train_step.py --quick               # a tiny configuration (what the tests run)

Every competitor runs in its own long-lived worker process (two OpenMP runtimes in one process
are trouble, and a thread count must be fixed before a BLAS library loads). The parent asks the
workers in turn, round after round, for about the same time of timed steps each, so slow drifts
of a shared machine hit every competitor alike. Reported per step: median, 10th percentile and
minimum microseconds, GFLOP/s (the step's FLOPs: 2 * batch * n_in * n_out per product, three
products per layer but the first, which needs no input delta), the percentage of the BLAS limit,
and bp's speed-up over each peer (peer time / bp time, from the medians).

The competitors, all doing the same work per step (forward, loss value, error signals, gradients,
in-place SGD update):

    bp          the compiled engine's ``Network.train_step``: one nogil call per step, the code
                fit's compiled epoch loop runs (minus fit's divergence guard), on fit's thread
                count for the step's size
    blas limit  the step's matrix products alone, through the BLAS bp links, into preallocated
                outputs: no step can be faster with these products
    numpy       the idiomatic loop: ``z @ W + b``, activations in place, the softmax /
                cross-entropy error signal, ``delta @ W.T`` before W changes, ``W -= lr * grad_W``
    reference   bp._reference, the plainest NumPy (bp's test oracle), plus the update
    torch       nn.Sequential, the loss module and optim.SGD, zero_grad(set_to_none=True) /
                forward / loss / backward / step, torch.set_num_threads(threads)
    jax         a jitted value_and_grad plus the update

Every table starts with the CPU, its vector extensions, the BLAS library and kernel
threadpoolctl reports in bp's worker, and the load average.

Outputs: a markdown table on stdout and in <out>/train_step.md, <out>/train_step.json and a plot
<out>/train_step.png (default out: bench/results).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
from _harness import machine, machine_line, write_outputs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name: (widths, batch, hidden activation, loss)
SHAPES = {
    "xor": ([2, 2, 1], 4, "sigmoid", "mse"),
    "digits": ([64, 128, 64, 10], 32, "relu", "cross_entropy"),
    "mnist": ([784, 256, 128, 10], 128, "relu", "cross_entropy"),
    "wide": ([1024, 4096, 4096, 1024], 256, "relu", "mse"),
    "deep": ([256] + [256] * 16 + [10], 64, "tanh", "cross_entropy"),
}
QUICK_SHAPES = {
    "xor": SHAPES["xor"],
    "tiny": ([16, 32, 4], 8, "tanh", "cross_entropy"),
}
LR = 0.01


def step_flops(widths, batch):
    """2 * batch * n_in * n_out per product; forward, grad_W and (but for layer 0) the delta."""
    total = 0
    for i in range(len(widths) - 1):
        products = 2 if i == 0 else 3
        total += products * 2 * batch * widths[i] * widths[i + 1]
    return total


def output_activation(shape):
    _, _, act, loss = shape
    return "softmax" if loss == "cross_entropy" else act


def make_data(shape, dtype, seed=0):
    widths, batch, _, _ = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, widths[0])).astype(dtype)
    if shape[3] == "cross_entropy":
        Y = np.zeros((batch, widths[-1]), dtype)
        Y[np.arange(batch), rng.integers(0, widths[-1], batch)] = 1
    else:
        Y = rng.uniform(0, 1, (batch, widths[-1])).astype(dtype)
    return X, Y


# ---- the competitors, each a factory of a step function --------------------------------------


def _bp_model(shape, dtype, threads, variant=None):
    import bp

    bp.set_num_threads(threads)
    widths, batch, act, loss = shape
    # variants: a Dropout(0.5) after every hidden layer (masks drawn in the step), or an l2
    # penalty on every layer's W (added in the step): their cost over the plain step
    reg = bp.l2(1e-4) if variant == "l2" else None
    layers = []
    for u in widths[1:-1]:
        layers.append(bp.Dense(u, activation=act, kernel_regularizer=reg))
        if variant == "dropout":
            layers.append(bp.Dropout(0.5))
    layers.append(bp.Dense(widths[-1], activation=output_activation(shape), kernel_regularizer=reg))
    model = bp.Sequential(layers, dtype=dtype, seed=0, input_dim=widths[0]).build()
    model.compile(loss=loss)
    return model


def setup_bp(shape, dtype, threads, variant=None):
    from api import compiled_step  # the one place that reaches into bp's internals

    X, Y = make_data(shape, dtype)
    return compiled_step(_bp_model(shape, dtype, threads, variant), X, Y, LR)


def setup_blas_limit(shape, dtype, threads):
    """The step's matrix products alone, through the BLAS bp links (scipy's) in bp's own gemm
    wrapper, into preallocated outputs, on fit's thread count for the step: forward z @ W,
    grad_W = z_prev.T @ delta and (but for the first layer) delta @ W.T."""
    import bp
    from bpcore import _blas

    model = _bp_model(shape, dtype, threads)
    widths, batch, _, _ = shape
    gemm = _blas._gemm[{"float32": "float", "float64": "double"}[dtype]]
    X, _ = make_data(shape, dtype)
    Ws = [W for W, _ in model._passes.param_views]
    z = [X] + [np.zeros((batch, n), dtype) for n in widths[1:]]
    delta = [np.full((batch, n), 0.5, dtype) for n in widths[1:]]
    grads = [np.empty_like(W) for W in Ws]
    bp._threads.hold_blas(model._passes.step_threads(batch, threads))
    products = []
    for i, W in enumerate(Ws):
        products.append((False, False, z[i], W, z[i + 1]))
        products.append((True, False, z[i], delta[i], grads[i]))
        if i > 0:
            products.append((False, True, delta[i], W, delta[i - 1]))

    def step():
        for ta, tb, A, B, C in products:
            gemm(ta, tb, 1.0, A, B, 0.0, C, "blas")

    return step


def numpy_step(Ws, bs, act, loss, lr):
    """The training step a competent NumPy user writes, as step(X, Y) -> loss value, updating
    Ws and bs in place: z @ W + b, activations in place, the softmax / cross-entropy (or mse)
    error signal, delta @ W.T before W changes, W -= lr * grad_W. The loss value is computed,
    as every other peer computes it."""
    n_layers = len(Ws)
    f = {"relu": lambda a: np.maximum(a, 0, out=a), "tanh": lambda a: np.tanh(a, out=a),
         "sigmoid": lambda a: np.divide(1, 1 + np.exp(-a), out=a)}[act]
    df = {"relu": lambda z: z > 0, "tanh": lambda z: 1 - z * z,
          "sigmoid": lambda z: z * (1 - z)}[act]
    lr = np.asarray(lr, Ws[0].dtype)

    def step(X, Y):
        zs = [X]
        for i, (W, b) in enumerate(zip(Ws, bs)):
            a = zs[-1] @ W
            a += b
            if i < n_layers - 1 or loss == "mse":
                f(a)
            zs.append(a)
        out = zs[-1]
        if loss == "cross_entropy":
            out -= out.max(axis=1, keepdims=True)
            logp = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
            value = -(Y * logp).sum() / X.shape[0]
            delta = (np.exp(logp) - Y) / X.shape[0]
        else:
            diff = out - Y
            value = (diff * diff).mean()
            delta = diff * (2 / diff.size) * df(out)
        for i in range(n_layers - 1, -1, -1):
            grad_W = zs[i].T @ delta
            grad_b = delta.sum(axis=0)
            if i > 0:
                delta = (delta @ Ws[i].T) * df(zs[i])
            Ws[i] -= lr * grad_W
            bs[i] -= lr * grad_b
        return value

    return step


def setup_numpy(shape, dtype, threads):
    widths, batch, act, loss = shape
    rng = np.random.default_rng(0)
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
          for a, b in zip(widths[:-1], widths[1:])]
    bs = [np.zeros(b, dtype) for b in widths[1:]]
    X, Y = make_data(shape, dtype)
    step = numpy_step(Ws, bs, act, loss, LR)
    return lambda: step(X, Y)


def setup_reference(shape, dtype, threads):
    """bp._reference (the plain NumPy oracle bp is tested against) plus an in-place update."""
    from bp import _reference as R

    widths, batch, act, loss = shape
    rng = np.random.default_rng(0)
    Ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
          for a, b in zip(widths[:-1], widths[1:])]
    bs = [np.zeros(b, dtype) for b in widths[1:]]
    acts = [act] * (len(widths) - 2) + [output_activation(shape)]
    X, Y = make_data(shape, dtype)

    def step():
        _, _, gW, gb = R.backward(X, Y, Ws, bs, acts, loss)
        for W, g in zip(Ws, gW):
            W -= LR * g
        for b, g in zip(bs, gb):
            b -= LR * g

    return step


def setup_torch(shape, dtype, threads):
    """nn.Sequential, the loss module, SGD: zero_grad(set_to_none=True) / forward / loss /
    backward / step, as PyTorch's tutorials write a training step."""
    import torch

    torch.set_num_threads(threads)
    widths, batch, act, loss = shape
    tdt = getattr(torch, dtype)
    acts = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    mods = []
    for i in range(len(widths) - 1):
        mods.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2 or loss == "mse":
            mods.append(acts[act]())
    net = torch.nn.Sequential(*mods).to(tdt)
    X, Y = make_data(shape, dtype)
    Xt = torch.from_numpy(X)
    if loss == "cross_entropy":
        Yt = torch.from_numpy(Y.argmax(axis=1))
        crit = torch.nn.CrossEntropyLoss()
    else:
        Yt = torch.from_numpy(Y)
        crit = torch.nn.MSELoss()
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def step():
        opt.zero_grad(set_to_none=True)
        value = crit(net(Xt), Yt)
        value.backward()
        opt.step()

    return step


def setup_jax(shape, dtype, threads):
    import jax
    import jax.numpy as jnp

    # float64 needs x64 mode; float32 arrays stay float32 under it (Python scalars are weak types)
    jax.config.update("jax_enable_x64", True)

    widths, batch, act, loss = shape
    f = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh}[act]
    rng = np.random.default_rng(0)
    params = [(jnp.asarray((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)),
               jnp.zeros(b, dtype)) for a, b in zip(widths[:-1], widths[1:])]
    X, Y = (jnp.asarray(a) for a in make_data(shape, dtype))

    def loss_fn(ps):
        z = X
        for i, (W, b) in enumerate(ps):
            z = z @ W + b
            if i < len(ps) - 1 or loss == "mse":
                z = f(z)
        if loss == "cross_entropy":
            return -jnp.mean(jnp.sum(Y * jax.nn.log_softmax(z), axis=1))
        return jnp.mean((z - Y) ** 2)

    @jax.jit
    def update(ps):
        value, g = jax.value_and_grad(loss_fn)(ps)
        return jax.tree_util.tree_map(lambda p, d: p - LR * d, ps, g), value

    state = [params]

    def step():
        state[0], value = update(state[0])
        value.block_until_ready()

    return step


SETUPS = {"bp": setup_bp, "blas limit": setup_blas_limit, "numpy": setup_numpy,
          "reference": setup_reference, "torch": setup_torch, "jax": setup_jax,
          "bp_dropout": lambda *a: setup_bp(*a, variant="dropout"),
          "bp_l2": lambda *a: setup_bp(*a, variant="l2")}


# ---- worker process: reads commands from stdin, answers JSON lines on stdout ------------------


def worker(name, threads):
    if (name == "jax" and hasattr(os, "sched_setaffinity")
            and threads < len(os.sched_getaffinity(0))):
        # XLA's CPU runtime sizes its thread pools from the CPUs it may use and has no supported
        # flag for one intra-op thread: confine it to `threads` CPUs so that 1 thread means 1.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the protocol
    steps = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["op"] == "setup":
                key = (cmd["shape"], cmd["dtype"])
                shape = tuple(cmd["spec"])
                fn = SETUPS[name](shape, cmd["dtype"], threads)
                t_end = time.perf_counter() + cmd["warmup"]
                count = 0
                while count < 3 or time.perf_counter() < t_end:
                    fn()
                    count += 1
                steps = {key: fn}  # one shape at a time keeps the memory down
                reply = {"ok": True}
            elif cmd["op"] == "time":
                fn = steps[(cmd["shape"], cmd["dtype"])]
                times = []
                for _ in range(cmd["n"]):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                reply = {"ok": True, "times": times}
            elif cmd["op"] == "machine":
                import bpcore._blas  # noqa: F401  (loads the BLAS bp links, for threadpoolctl)

                reply = {"ok": True, "machine": machine()}
            else:
                reply = {"ok": False, "error": f"unknown op {cmd['op']}"}
        except Exception as exc:  # report, keep serving
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


class Worker:
    def __init__(self, name, threads):
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", name,
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def available_peers(requested):
    peers = []
    for name in requested:
        if name in SETUPS and (name.startswith("bp") or name in ("blas limit", "numpy", "reference")
                               or importlib.util.find_spec(name) is not None):
            peers.append(name)
        else:
            print(f"# {name} is not installed: skipped", file=sys.stderr)
    return peers


def summarize(times):
    us = np.asarray(times) * 1e6
    return {"median_us": float(np.median(us)), "p10_us": float(np.percentile(us, 10)),
            "min_us": float(us.min()), "n": int(us.size)}


def run(args):
    shapes = QUICK_SHAPES if args.quick else {k: SHAPES[k] for k in args.shapes}
    peers = available_peers(args.peers)
    results = {"shapes": {}, "rows": [], "machine": {}}
    for threads in args.threads:
        workers = {}
        try:
            for name in peers:
                workers[name] = Worker(name, threads)
            # what bp's process sees: its BLAS library and kernel, under this thread count
            results["machine"][threads] = workers["bp"].ask(op="machine")["machine"]
            for dtype in args.dtypes:
                for sname, shape in shapes.items():
                    flops = step_flops(shape[0], shape[1])
                    live = dict(workers)
                    for name, w in list(live.items()):
                        try:
                            w.ask(op="setup", shape=sname, spec=list(shape), dtype=dtype,
                                  warmup=0.05 if args.quick else 0.5)
                        except RuntimeError as exc:
                            print(f"# {exc}: skipped", file=sys.stderr)
                            del live[name]
                    # each competitor runs about round_seconds per round, whatever its speed
                    n_steps = {}
                    for name, w in live.items():
                        probe = min(w.ask(op="time", shape=sname, dtype=dtype, n=3)["times"])
                        n_steps[name] = max(1, min(200, int(args.round_seconds / max(probe, 1e-7))))
                    samples = {name: [] for name in live}
                    for r in range(args.rounds):
                        names = list(live)
                        names = names[r % len(names):] + names[:r % len(names)]  # rotate
                        for name in names:
                            samples[name] += live[name].ask(op="time", shape=sname, dtype=dtype,
                                                            n=n_steps[name])["times"]
                    stats = {name: summarize(t) for name, t in samples.items() if t}
                    bp_med = stats["bp"]["median_us"]
                    limit = stats.get("blas limit", {}).get("median_us")
                    for name, st in stats.items():
                        row = {"shape": sname, "dtype": dtype, "threads": threads, "impl": name,
                               **st, "samples_per_s": shape[1] / (st["median_us"] * 1e-6),
                               "gflops": flops / (st["median_us"] * 1e-6) / 1e9,
                               "of_limit": None if limit is None else limit / st["median_us"],
                               "bp_speedup": st["median_us"] / bp_med}
                        results["rows"].append(row)
                    results["shapes"][sname] = {"widths": shape[0], "batch": shape[1],
                                                "activation": shape[2], "loss": shape[3],
                                                "gflop_per_step": flops / 1e9}
                    print(f"# done {sname} {dtype} {threads} thread(s)", file=sys.stderr)
        finally:
            for w in workers.values():
                w.close()
    return results


def markdown(results):
    lines = []
    for threads, info in results["machine"].items():
        lines.append(f"{threads} thread(s): " + machine_line(info))
    lines += ["", "| shape | dtype | thr | impl | median us | p10 us | min us | GFLOP/s "
              "| % of BLAS limit | bp speed-up (peer/bp) |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        of_limit = "" if r["of_limit"] is None else f"{100 * r['of_limit']:.0f}%"
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['threads']} | {r['impl']} | {r['median_us']:.1f} "
            f"| {r['p10_us']:.1f} | {r['min_us']:.1f} | {r['gflops']:.1f} | {of_limit} "
            f"| {'' if r['impl'] in ('bp', 'blas limit') else '{:.2f}x'.format(r['bp_speedup'])} |")
    return "\n".join(lines)


def targets(results):
    """issue 13's targets, judged on the medians of this run (ratios of medians), as markdown."""
    rows = results["rows"]

    def med(shape, dtype, threads, impl):
        return next((r["median_us"] for r in rows if (r["shape"], r["dtype"], r["threads"],
                                                       r["impl"]) == (shape, dtype, threads, impl)),
                    None)

    def cell(value, goal, fmt):
        return "" if value is None else f"{fmt(value)} {'yes' if value >= goal else 'NO'}"

    pct, times = (lambda v: f"{100 * v:.0f}%"), (lambda v: f"{v:.2f}x")
    checks = []
    for shape in ("mnist", "deep", "wide"):
        checks.append((f"{shape}: bp >= 90% of the BLAS limit", 0.9, pct,
                       lambda d, t, s=shape: _ratio(med(s, d, t, "blas limit"),
                                                    med(s, d, t, "bp"))))
    for shape in ("mnist", "deep"):
        for peer, goal in (("numpy", 1.1), ("torch", 1.5)):
            checks.append((f"{shape}: bp >= {goal}x {peer}", goal, times,
                           lambda d, t, s=shape, p=peer: _ratio(med(s, d, t, p),
                                                                med(s, d, t, "bp"))))
    for peer, goal in (("numpy", 3.0), ("torch", 10.0)):
        checks.append((f"digits: bp >= {goal:g}x {peer}", goal, times,
                       lambda d, t, p=peer: _ratio(med("digits", d, t, p),
                                                   med("digits", d, t, "bp"))))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    header = ["target"] + [f"{d}, {t} thr" for d in dtypes for t in threads]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, goal, fmt, fn in checks:
        lines.append("| " + " | ".join([name] + [cell(fn(d, t), goal, fmt) for d in dtypes
                                                   for t in threads]) + " |")
    if 1 in threads and 2 in threads:
        for shape, goal in (("mnist", 1.5), ("wide", 1.7)):
            lines.append("| " + " | ".join(
                [f"{shape}: bp 2 threads >= {goal}x 1 thread"]
                + [cell(_ratio(med(shape, d, 1, "bp"), med(shape, d, 2, "bp")), goal, times)
                   if t == 2 else "" for d in dtypes for t in threads]) + " |")
    return "\n".join(lines)


def _ratio(a, b):
    return None if a is None or b is None else a / b


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    configs = sorted({(r["dtype"], r["threads"]) for r in rows})
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for ax, (dtype, threads) in zip(axes[0], configs):
        sel = [r for r in rows if r["dtype"] == dtype and r["threads"] == threads]
        shapes = list(dict.fromkeys(r["shape"] for r in sel))
        impls = list(dict.fromkeys(r["impl"] for r in sel))
        width = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            vals = [next((r["median_us"] for r in sel if r["shape"] == s and r["impl"] == impl),
                         np.nan) for s in shapes]
            ax.bar(np.arange(len(shapes)) + k * width, vals, width, label=impl)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(shapes)) + 0.4 - width / 2)
        ax.set_xticklabels(shapes)
        ax.set_ylabel("median us per training step")
        ax.set_title(f"{dtype}, {threads} thread(s)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--peers", nargs="+",
                    default=["bp", "blas limit", "numpy", "reference", "torch", "jax"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--round-seconds", type=float, default=0.05,
                    help="about how long bp runs per round (others get a similar time)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (for tests)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.threads[0])
        return 0
    if args.quick:
        args.rounds = min(args.rounds, 3)
        args.round_seconds = 0.005
    results = run(args)
    write_outputs(args.out, "train_step", markdown(results) + "\n\n" + targets(results), results)
    plot(results, os.path.join(args.out, "train_step.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
