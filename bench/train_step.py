"""One SGD training step (forward, loss, backward, update): bp against NumPy, PyTorch and JAX.

Usage:
    python bench/train_step.py                       # every shape, float32 and float64, 1 and 2 threads
    python bench/train_step.py --shapes xor digits --dtypes float32 --threads 1
    python bench/train_step.py --quick               # a tiny configuration (what the tests run)

Every competitor runs in its own long-lived worker process (two OpenMP runtimes in one process
are trouble, and a thread count must be fixed before a BLAS library loads). The parent asks the
workers in turn, round after round, for a handful of timed steps, so slow drifts of a shared
machine hit every competitor alike. Reported per step: median, 10th percentile and minimum
microseconds, samples per second, bp's speed-up over each peer (peer time / bp time, from the
medians), and the roofline efficiency: the step's FLOPs (2 * batch * n_in * n_out per product,
three products per layer but the first, which needs no input delta) over the gemm peak measured in
the same run (NumPy's matmul on large square matrices, same dtype and thread count).

bp is timed through its compiled engine: ``Network.train_step`` (one nogil call per step, the
same code fit's compiled epoch loop runs, minus fit's divergence guard). PyTorch runs
zero_grad / forward / loss / backward / optimizer.step; NumPy is bp._reference (the plain NumPy
oracle) with an in-place SGD update; JAX is a jitted value_and_grad plus the update.

Outputs: a markdown table on stdout and in <out>/train_step.md, <out>/train_step.json and a plot
<out>/train_step.png (default out: bench/results).
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

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


def setup_bp(shape, dtype, threads):
    import bp
    import bpcore

    bp.set_num_threads(threads)
    widths, batch, act, loss = shape
    layers = [bp.Dense(u, activation=act) for u in widths[1:-1]]
    layers.append(bp.Dense(widths[-1], activation=output_activation(shape)))
    model = bp.Sequential(layers, dtype=dtype, seed=0, input_dim=widths[0]).build()
    X, Y = make_data(shape, dtype)
    passes = model._passes
    net = passes.engine()
    net.bind(passes.workspace(batch))
    opt = bp.SGD(LR)._engine_spec()
    code = bpcore.LOSSES[loss]
    scale = 1.0 / batch if loss == "cross_entropy" else 1.0 / (batch * widths[-1])
    # fit's thread policy: steps below the crossover run BLAS on one thread too
    nt = passes.step_threads(batch, bp.get_num_threads())
    bp._threads.hold_blas(nt)
    return lambda: net.train_step(X, Y, None, code, scale, opt, LR, 0, nt)


def setup_numpy(shape, dtype, threads):
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
        opt.zero_grad()
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


SETUPS = {"bp": setup_bp, "numpy": setup_numpy, "torch": setup_torch, "jax": setup_jax}


def gemm_peak(dtype, seconds=1.0):
    """GFLOP/s of NumPy's matmul on square matrices (the best of a few sizes and repeats)."""
    best = 0.0
    for n in (1024, 2048):
        a = np.ones((n, n), dtype)
        b = np.ones((n, n), dtype)
        c = np.empty((n, n), dtype)
        np.matmul(a, b, out=c)
        t_end = time.perf_counter() + seconds / 2
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


# ---- worker process: reads commands from stdin, answers JSON lines on stdout ------------------


def worker(name, threads):
    if name == "jax" and hasattr(os, "sched_setaffinity") and threads < len(os.sched_getaffinity(0)):
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
            elif cmd["op"] == "peak":
                reply = {"ok": True, "gflops": gemm_peak(cmd["dtype"], cmd["seconds"])}
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
            [sys.executable, os.path.abspath(__file__), "--worker", name, "--threads", str(threads)],
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
        if name in ("bp", "numpy") or importlib.util.find_spec(name) is not None:
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
    results = {"machine": machine_info(), "shapes": {}, "peak_gflops": {}, "rows": []}
    for threads in args.threads:
        workers = {}
        try:
            for name in peers:
                workers[name] = Worker(name, threads)
            for dtype in args.dtypes:
                peak = workers["numpy"].ask(op="peak", dtype=dtype,
                                            seconds=0.2 if args.quick else 2.0)["gflops"]
                results["peak_gflops"][f"{dtype}/{threads}"] = peak
                for sname, shape in shapes.items():
                    flops = step_flops(shape[0], shape[1])
                    # aim at rounds of ~budget seconds per competitor
                    samples = {name: [] for name in workers}
                    live = dict(workers)
                    for name, w in list(live.items()):
                        try:
                            w.ask(op="setup", shape=sname, spec=list(shape), dtype=dtype,
                                  warmup=0.05 if args.quick else 0.5)
                        except RuntimeError as exc:
                            print(f"# {exc}: skipped", file=sys.stderr)
                            del live[name]
                    probe = live["bp"].ask(op="time", shape=sname, dtype=dtype, n=3)["times"]
                    per_round = max(1, min(200, int(args.round_seconds / max(min(probe), 1e-7))))
                    for r in range(args.rounds):
                        names = list(live)
                        names = names[r % len(names):] + names[:r % len(names)]  # rotate
                        for name in names:
                            # the others' per-step cost differs: ask each for about the same time
                            n_steps = per_round if name == "bp" else max(1, per_round // 8) if \
                                shape[1] <= 32 else max(1, per_round // 2)
                            samples[name] += live[name].ask(op="time", shape=sname, dtype=dtype,
                                                            n=n_steps)["times"]
                    stats = {name: summarize(t) for name, t in samples.items() if t}
                    bp_med = stats["bp"]["median_us"]
                    for name, st in stats.items():
                        row = {"shape": sname, "dtype": dtype, "threads": threads, "impl": name,
                               **st, "samples_per_s": shape[1] / (st["median_us"] * 1e-6),
                               "roofline": flops / (st["median_us"] * 1e-6) / (peak * 1e9),
                               "roofline_best": flops / (st["min_us"] * 1e-6) / (peak * 1e9),
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


def machine_info():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    for mod in ("torch", "jax", "scipy"):
        if importlib.util.find_spec(mod) is not None:
            info[mod] = __import__(mod).__version__
    return info


def markdown(results):
    lines = [f"Machine: {results['machine']['cpu']}, {results['machine']['logical_cpus']} logical "
             f"CPUs; {results['machine']['date']}",
             "gemm peak (NumPy matmul, GFLOP/s): " + ", ".join(
                 f"{k} thr: {v:.1f}" for k, v in results["peak_gflops"].items()), "",
             "| shape | dtype | thr | impl | median us | p10 us | min us | samples/s "
             "| bp speed-up (peer/bp) | roofline (median / best) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['threads']} | {r['impl']} | {r['median_us']:.1f} "
            f"| {r['p10_us']:.1f} | {r['min_us']:.1f} | {r['samples_per_s']:.3g} "
            f"| {'' if r['impl'] == 'bp' else '%.2fx' % r['bp_speedup']} "
            f"| {100 * r['roofline']:.1f}% / {100 * r['roofline_best']:.1f}% |")
    return "\n".join(lines)


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
    ap.add_argument("--peers", nargs="+", default=["bp", "numpy", "torch", "jax"])
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
    write_outputs(args.out, "train_step", markdown(results), results)
    plot(results, os.path.join(args.out, "train_step.png"))
    return 0


def write_outputs(out, stem, table, results):
    """Print the markdown table and write it and the raw results to out/stem.md and .json."""
    os.makedirs(out, exist_ok=True)
    print(table)
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
