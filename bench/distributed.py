"""Data-parallel training over MPI: measured at p = 1, 2 on this machine, and a cost model
beyond it.

Usage:
    python bench/distributed.py                  # both parts, writes
                                                 # bench/results/distributed.{md,json,png}
    python bench/distributed.py --part model     # the cost model only (in-process, 1 thread)
    python bench/distributed.py --part measured  # the mpiexec runs only
    python bench/distributed.py --quick          # tiny configuration (what the tests run)

Measured (``mpiexec -n p python -m mpi4py bench/distributed.py --worker ...``, one thread per rank,
float32, SGD, shuffled): epoch time of ``fit(..., comm=comm)`` at p = 1 and 2 on the mnist shape
(784-256-128-10 relu, synthetic 60000 x 784, global batch 128: 64 rows per rank at p = 2) and on
digits (64-128-64-10, global batch 32), against ``fit`` without MPI at p = 1 (the overhead of the
per-step hand-off to the allreduce at p = 1 is the ratio of those two). A step is split into the
allreduce (the StepReducer call, which includes waiting for the slower rank) and the rest. The
p = 1 and p = 2 launches alternate (interleaved repeats); medians.

Cost model: T_step(p) = T_compute(B / p) + T_allreduce(bytes, p), with the ring allreduce
T_allreduce = 2 (p - 1) / p x bytes / bandwidth + 2 (p - 1) x latency (each of the 2 (p - 1)
rounds moves bytes / p per rank). T_compute(b) is measured here: bp's fit step time (one thread,
float32) against the batch size b, interpolated on a log-log grid, linear in b above the largest
batch measured. Speed-up at a fixed global batch B: S(p) = T_compute(B) / T_step(p). With ideal
overlap of communication and the backward pass (PyTorch DDP's buckets at best), T_step(p) =
max(T_compute(B / p), T_allreduce): an upper bound on what overlap can give.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)  # bp and bpcore from this tree, not an installed copy
from _harness import machine, machine_line, markdown_table  # noqa: E402
from fit import load  # noqa: E402  (the same synthetic mnist-shaped data and digits)

# shape: (widths, hidden activation, loss, the shape's batch in bench/train_step.py)
SHAPES = {
    "mnist": ([784, 256, 128, 10], "relu", "cross_entropy", 128),
    "deep": ([256] + [256] * 16 + [10], "tanh", "cross_entropy", 64),
    "wide": ([1024, 4096, 4096, 1024], "relu", "mse", 256),
}
# Assumed networks: line rate as bandwidth (MPI reaches ~90% of it on large messages) and the
# small-message MPI latency typical of each (TCP over Ethernet; RDMA for 100 GbE RoCE and IB).
NETWORKS = {
    "10GbE": {"bandwidth": 10e9 / 8, "latency": 30e-6},
    "25GbE": {"bandwidth": 25e9 / 8, "latency": 20e-6},
    "100GbE": {"bandwidth": 100e9 / 8, "latency": 5e-6},
    "IB HDR": {"bandwidth": 200e9 / 8, "latency": 1.5e-6},
}
RANKS = [1, 2, 4, 8, 16, 32, 64]
MEASURED = {
    "mnist": {"widths": [784, 256, 128, 10], "global_batch": 128, "n": 60000},
    "digits": {"widths": [64, 128, 64, 10], "global_batch": 32},
}
QUICK_MEASURED = {
    "mnist": {"widths": [784, 32, 10], "global_batch": 128, "n": 2048},
    "digits": {"widths": [64, 32, 10], "global_batch": 32},
}


# ---- the cost model --------------------------------------------------------------------------
def build_model(widths, activation, loss, dtype="float32"):
    import bp

    layers = [bp.Dense(u, activation=activation) for u in widths[1:-1]]
    out = "softmax" if loss == "cross_entropy" else "identity"
    layers.append(bp.Dense(widths[-1], activation=out))
    return bp.Sequential(layers, dtype=dtype, seed=0, input_dim=widths[0]).build()


def step_seconds(widths, activation, loss, batch, target_s, repeat):
    """Median seconds per fit step at this batch size (one epoch of k steps, k >= 2, timed)."""
    import bp

    model = build_model(widths, activation, loss)
    rng = np.random.default_rng(0)
    # a first guess of the cost: FLOPs at ~20 GFLOP/s, to size the epoch
    flops = 6 * batch * sum(a * b for a, b in zip(widths, widths[1:]))
    steps = int(min(200, max(2, target_s / max(flops / 20e9, 1e-5))))
    X = rng.standard_normal((steps * batch, widths[0])).astype(np.float32)
    y = (rng.integers(0, widths[-1], steps * batch) if loss == "cross_entropy"
         else rng.standard_normal((steps * batch, widths[-1])).astype(np.float32))
    opt = bp.SGD(1e-3)
    def fit():
        return model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=batch,
                                shuffle=False, verbose=0)
    fit()  # warm-up: workspaces, engine
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fit()
        times.append((time.perf_counter() - t0) / steps)
    return float(np.median(times)), model.n_params


def measure_compute(quick):
    """{shape: {"batches": [...], "seconds": [...], "n_params": int}} at one thread."""
    import bp

    bp.set_num_threads(1)
    grids = {"mnist": [1, 4, 16, 64, 256, 1024], "deep": [1, 4, 16, 64, 256, 1024],
             "wide": [1, 4, 16, 64, 256]}
    if quick:
        grids = {"mnist": [1, 16, 128], "deep": [1, 16], "wide": [1]}
    shapes = {k: SHAPES[k] for k in grids}
    if quick:
        shapes = {"mnist": ([784, 32, 10], "relu", "cross_entropy", 128),
                  "deep": ([64] + [64] * 4 + [10], "tanh", "cross_entropy", 64),
                  "wide": ([256, 256, 256], "relu", "mse", 256)}
    out = {}
    for name, (widths, act, loss, _) in shapes.items():
        seconds = []
        for b in grids[name]:
            s, n_params = step_seconds(widths, act, loss, b, 0.02 if quick else 0.3,
                                       2 if quick else 5)
            seconds.append(s)
            print(f"  compute {name} batch {b}: {s * 1e6:.0f} us/step", file=sys.stderr)
        out[name] = {"batches": grids[name], "seconds": seconds, "n_params": n_params}
    return out


def t_compute(measured, b):
    """Interpolated step time at batch b (log-log between points; linear beyond the last)."""
    bs, ts = np.log(measured["batches"]), np.log(measured["seconds"])
    if b >= measured["batches"][-1]:
        return measured["seconds"][-1] * b / measured["batches"][-1]
    return float(np.exp(np.interp(math.log(max(b, 1)), bs, ts)))


def t_allreduce(n_bytes, p, net):
    """The ring allreduce: 2 (p - 1) rounds, each moving bytes / p per rank and paying latency."""
    if p == 1:
        return 0.0
    return 2 * (p - 1) / p * n_bytes / net["bandwidth"] + 2 * (p - 1) * net["latency"]


def speedup(measured, B, p, net, overlap=False):
    n_bytes = 4 * measured["n_params"]  # float32 gradients
    comp, comm = t_compute(measured, B / p), t_allreduce(n_bytes, p, net)
    step = max(comp, comm) if overlap else comp + comm
    return t_compute(measured, B) / step


def smallest_paying_batch(measured, net, p, efficiency=None, overlap=False):
    """The smallest global batch (a power of 2 from p) at which p ranks beat one (efficiency
    None), or reach efficiency x p speed-up."""
    for k in range(int(math.log2(p)), 24):
        B = 2 ** k
        s = speedup(measured, B, p, net, overlap)
        if (s > 1.0 if efficiency is None else s >= efficiency * p):
            return B
    return None


def model_tables(compute):
    rows = []
    for shape, m in compute.items():
        B = SHAPES[shape][3]
        for net_name, net in NETWORKS.items():
            sp = {p: speedup(m, B, p, net) for p in RANKS}
            spo = {p: speedup(m, B, p, net, overlap=True) for p in RANKS}
            best = max(RANKS, key=lambda p: sp[p])
            rows.append([shape, f"{4 * m['n_params'] / 1e6:.2f}", net_name, B,
                         f"{t_allreduce(4 * m['n_params'], 64, net) * 1e3:.2f}",
                         " / ".join(f"{sp[p]:.2f}" for p in (2, 8, 64)),
                         " / ".join(f"{spo[p]:.2f}" for p in (2, 8, 64)), best,
                         smallest_paying_batch(m, net, 2),
                         smallest_paying_batch(m, net, 64, efficiency=0.5)])
    header = ["shape", "grad MB", "network", "global batch B", "allreduce p=64 ms",
              "speed-up p=2/8/64", "with overlap p=2/8/64", "best p", "B where p=2 pays",
              "B for 64 ranks >= 32x"]
    compute_rows = [[shape, b, f"{s * 1e6:.0f}", f"{b / s:,.0f}"] for shape, m in compute.items()
                    for b, s in zip(m["batches"], m["seconds"])]
    return (markdown_table(["shape", "batch", "step us (1 thread)", "samples/s"], compute_rows),
            markdown_table(header, rows))


def plot(compute, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(compute), figsize=(5 * len(compute), 4), sharey=True)
    for ax, (shape, m) in zip(np.atleast_1d(axes), compute.items()):
        B = SHAPES[shape][3]
        for i, (net_name, net) in enumerate(NETWORKS.items()):
            color = f"C{i}"
            ax.plot(RANKS, [speedup(m, B, p, net) for p in RANKS], "o-", color=color,
                    label=net_name)
            ax.plot(RANKS, [speedup(m, B, p, net, overlap=True) for p in RANKS], "--",
                    color=color)
        ax.plot(RANKS, RANKS, ":", color="grey", label="linear")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(f"{shape} ({4 * m['n_params'] / 1e6:.1f} MB of gradients), B = {B}")
        ax.set_xlabel("ranks p (one thread each)")
    np.atleast_1d(axes)[0].set_ylabel("predicted speed-up (dashed: ideal overlap)")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# ---- the measured part: a worker under mpiexec -------------------------------------------------
def worker(dataset, epochs, quick):
    """Runs on every rank: fit(comm=...) epochs, timed; rank 0 prints JSON.

    Per epoch round: (p = 1 only) fit without MPI, then fit(comm=...), alternating, then one
    fit(comm=...) epoch with the step's allreduce timed (StepReducer wrapped by a timer here in the
    benchmark, not in bp): the split of a step into allreduce and the rest.
    """
    from mpi4py import MPI

    import bp
    from bp import _mpi, distributed

    comm = MPI.COMM_WORLD
    rank, p = comm.Get_rank(), comm.Get_size()
    bp.set_num_threads(1)
    spec = (QUICK_MEASURED if quick else MEASURED)[dataset]
    X, y = load(dataset, spec)
    w = spec["widths"]
    layers = ([bp.Dense(u, activation="relu") for u in w[1:-1]]
              + [bp.Dense(w[-1], activation="softmax")])
    model = bp.Sequential(layers, dtype="float32", seed=0, input_dim=w[0]).build()
    opt = bp.SGD(0.01)
    B = spec["global_batch"]
    b = B // p
    X_mine, y_mine = distributed.shard_rows(X, comm), distributed.shard_rows(y, comm)
    n_steps = -(-len(X_mine) // b)

    def epoch(c):
        """The epoch times fit itself records (History.epoch_times: the epoch loop, without
        fit's set-up, which with comm includes the broadcast of the parameters)."""
        comm.Barrier()
        history = model.fit(X_mine, y_mine, loss="cross_entropy", optimizer=opt, batch_size=b,
                            epochs=epochs, verbose=0, comm=c)
        return history.epoch_times

    reduce_seconds = [0.0]
    plain_call = _mpi.StepReducer.__call__

    def timed_call(self):
        t0 = time.perf_counter()
        status = plain_call(self)
        reduce_seconds[0] += time.perf_counter() - t0
        return status

    epoch(comm)  # warm-up
    result = {"p": p, "steps": n_steps, "fit": [], "fit_comm": [], "allreduce": [], "timed": []}
    for _ in range(2):
        if p == 1:
            result["fit"] += epoch(None)
        result["fit_comm"] += epoch(comm)
    _mpi.StepReducer.__call__ = timed_call
    result["timed"] = epoch(comm)
    result["allreduce"] = reduce_seconds[0] / epochs
    _mpi.StepReducer.__call__ = plain_call
    # the allreduce alone, back to back (no compute between: no rank waits for a slower one)
    grads = np.zeros(model.n_params, np.float32)
    times = []
    for _ in range(5 if quick else 200):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
        times.append(time.perf_counter() - t0)
    result["allreduce_alone"] = float(np.median(times))
    if rank == 0:
        print("RESULT " + json.dumps(result))


def launch(dataset, p, epochs, quick):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        mpiexec = "mpiexec"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [mpiexec, "-n", str(p), sys.executable, "-m", "mpi4py", os.path.abspath(__file__),
           "--worker", dataset, "--epochs", str(epochs)] + (["--quick"] if quick else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][0]
    return json.loads(line[len("RESULT "):])


def measured_part(quick, rounds, epochs):
    runs = {(d, p): [] for d in MEASURED for p in (1, 2)}
    for r in range(rounds):
        for d in MEASURED:
            for p in ((1, 2) if r % 2 == 0 else (2, 1)):  # interleaved, the order alternating
                runs[d, p].append(launch(d, p, epochs, quick))
                print(f"  measured {d} p={p} round {r}", file=sys.stderr)
    rows, raw = [], {}
    for d in MEASURED:
        spec = (QUICK_MEASURED if quick else MEASURED)[d]
        def pooled(p, key, d=d):
            return [t for run in runs[d, p] for t in run[key]]
        base = float(np.median(pooled(1, "fit")))
        rows.append([d, 1, spec["global_batch"], "fit", f"{base:.3f}", "", "", "", "1.00"])
        for p in (1, 2):
            steps = runs[d, p][0]["steps"]
            seconds = float(np.median(pooled(p, "fit_comm")))
            reduce = float(np.median([run["allreduce"] for run in runs[d, p]])) / steps
            timed = float(np.median(pooled(p, "timed"))) / steps
            alone = float(np.median([run["allreduce_alone"] for run in runs[d, p]]))
            rows.append([d, p, f"{spec['global_batch'] // p} x {p}", "fit(comm=...)",
                         f"{seconds:.3f}", f"{reduce * 1e6:.0f}", f"{alone * 1e6:.0f}",
                         f"{(timed - reduce) * 1e6:.0f}", f"{base / seconds:.2f}"])
            raw[f"{d} p={p}"] = runs[d, p]
    header = ["data", "p", "batch per rank x p", "call", "epoch s (median)",
              "allreduce us/step", "allreduce alone us", "rest of step us",
              "speed-up vs fit at p=1"]
    return markdown_table(header, rows), raw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["both", "model", "measured"], default="both")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.epochs, args.quick)
        return 0
    import bp

    bp._threads.blas_info()  # (bp is loaded: threadpoolctl sees the BLAS its gemm calls)
    info = machine()
    blas = info["blas"]
    head = f"Machine: {machine_line(info)}; float32, 1 thread per rank"
    print(head)
    text, results = [head, ""], {"machine": info, "blas": blas}
    os.makedirs(args.out, exist_ok=True)
    if args.part in ("both", "measured"):
        rounds = 1 if args.quick else args.rounds
        table, raw = measured_part(args.quick, rounds, 1 if args.quick else args.epochs)
        text += ["## Measured: p = 1 and p = 2 on this machine", "", table, ""]
        results["measured"] = raw
        print(table)
    if args.part in ("both", "model"):
        compute = measure_compute(args.quick)
        t_comp, t_model = model_tables(compute)
        text += ["## Compute term: bp's fit step at one thread", "", t_comp, "",
                 "## The cost model: predicted speed-up at the shape's global batch", "",
                 "Networks: " + "; ".join(f"{k}: {v['bandwidth'] * 8 / 1e9:.0f} Gb/s, "
                                          f"{v['latency'] * 1e6:g} us"
                                          for k, v in NETWORKS.items()),
                 "", t_model, ""]
        results["compute"] = compute
        print(t_comp)
        print(t_model)
        if not args.quick:
            plot(compute, os.path.join(args.out, "distributed.png"))
    with open(os.path.join(args.out, "distributed.md"), "w") as f:
        f.write("\n".join(text) + "\n")
    with open(os.path.join(args.out, "distributed.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
