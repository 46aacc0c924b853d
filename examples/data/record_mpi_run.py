"""Record the numbers plot_mpi.py draws: one data-parallel run over MPI, and one process.

    mpiexec -n 2 python -m mpi4py examples/data/record_mpi_run.py   # writes mpi_run.json here

Both fit the digits network with the same seed, SGD, no shuffling: the single process with batch
64, the ranks with 32 rows each (contiguous halves of every global batch), so bp promises the same
weights to float rounding. Not run by the docs build (it needs mpiexec); its output is committed.
"""

import json
import platform
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI
from sklearn.datasets import load_digits

import bp
from bp import distributed

comm = MPI.COMM_WORLD
p, rank = comm.Get_size(), comm.Get_rank()
X, y = load_digits(return_X_y=True)
X = (X / 16.0)[:1792]  # a multiple of the global batch: every step has 64 rows
y = y[:1792]
b, epochs = 32, 20


def network():
    return bp.Sequential([bp.Dense(64, activation="relu"), bp.Dense(10, activation="softmax")],
                         dtype="float64", seed=0)


# the ranks: rank r holds rows [t*64 + r*32, t*64 + r*32 + 32) of each global batch t
idx = np.concatenate([np.arange(s + rank * b, s + rank * b + b) for s in range(0, len(X), p * b)])
model = network()
t0 = time.perf_counter()
h = model.fit(X[idx], y[idx], optimizer=bp.SGD(0.05, momentum=0.9), batch_size=b, epochs=epochs,
              shuffle=False, verbose=0, comm=comm)
t_parallel = time.perf_counter() - t0
distributed.check_same_model(model, comm)
if rank == 0:
    single = network()
    t0 = time.perf_counter()
    hs = single.fit(X, y, optimizer=bp.SGD(0.05, momentum=0.9), batch_size=p * b, epochs=epochs,
                    shuffle=False, verbose=0)
    t_single = time.perf_counter() - t0
    diff = max(float(np.abs(a.W - s.W).max()) for a, s in zip(model.layers, single.layers))
    record = {
        "command": "mpiexec -n 2 python -m mpi4py examples/data/record_mpi_run.py",
        "machine": f"{platform.machine()}, {platform.python_version()}, bp {bp.__version__}",
        "ranks": p, "batch_per_rank": b, "epochs": epochs, "rows": len(X),
        "loss_parallel": h.history["loss"], "loss_single": hs.history["loss"],
        "accuracy_parallel": h.history["accuracy"], "accuracy_single": hs.history["accuracy"],
        "max_abs_weight_difference": diff,
        "epoch_times_parallel": h.epoch_times, "epoch_times_single": hs.epoch_times,
        "seconds_parallel": t_parallel, "seconds_single": t_single,
    }
    (Path(__file__).parent / "mpi_run.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if not isinstance(v, list)}, indent=1))
