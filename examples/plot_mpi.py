"""
What data-parallel training over MPI does
=========================================

``model.fit(X_mine, y_mine, comm=comm)`` under ``mpiexec -n p`` trains one model on p processes
(ranks), each holding its own rows. Every step, each rank computes the gradient of its
micro-batch, one ``MPI_Allreduce`` sums the flat gradient buffers, and every rank applies the same
update: the result is the model one process would train on the union of the ranks' micro-batches
(see :ref:`mpi`).

A docs build cannot launch ``mpiexec``, so this example draws a run recorded by
``examples/data/record_mpi_run.py`` (2 ranks with 32 rows each per step, against one process with
64 rows per step, on the digits, float64, no shuffling) and committed beside it as
``mpi_run.json``.
"""

# %%
# The recorded run.
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

try:
    here = Path(__file__).parent
except NameError:  # sphinx-gallery runs the example in its own directory, without __file__
    here = Path.cwd()
run = json.loads((here / "data" / "mpi_run.json").read_text())
print(run["command"])
print(f"{run['ranks']} ranks x {run['batch_per_rank']} rows per step, {run['epochs']} epochs, "
      f"{run['rows']} rows")
print(f"largest |weight difference| to one process with batch "
      f"{run['ranks'] * run['batch_per_rank']}: {run['max_abs_weight_difference']:.1e}")

# %%
# One process on the union: the two loss curves lie on each other, and the final weights agree
# to float64 rounding. (The ranks themselves stay bit for bit identical: the initial parameters
# are broadcast from rank 0 and every rank applies the same summed update.)
epochs = np.arange(1, run["epochs"] + 1)
fig, ax_loss = plt.subplots(figsize=(5.5, 3.6))
ax_loss.plot(epochs, run["loss_single"], "o-", label="1 process, batch 64")
ax_loss.plot(epochs, run["loss_parallel"], "x--", label="2 ranks, 32 rows each")
ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="the same training")
ax_loss.legend()
fig.tight_layout()

# %%
# Time. The digits network is far too small to split: a 32-row step computes in tens of
# microseconds, about what the allreduce of its gradients costs, so two ranks are slower than
# one here. On the 784-256-128-10 network with 128 rows per step, two ranks on two cores ran
# 1.41-1.44x faster than one process (``bench/README.md``, "Scaling out").
fig, ax_time = plt.subplots(figsize=(4.5, 3.4))
ax_time.bar(["1 process", "2 ranks"],
            [np.median(run["epoch_times_single"]) * 1e3,
             np.median(run["epoch_times_parallel"]) * 1e3], color=["C0", "C1"])
ax_time.set(ylabel="ms per epoch (median)", title="digits: too small to split")
fig.tight_layout()
