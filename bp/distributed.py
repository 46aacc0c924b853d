"""Data-parallel training over MPI: helpers around mpi4py on NumPy buffers.

Most users need only ``model.fit(X_mine, y_mine, comm=comm)`` (the user guide's "Training on
many processes"), which runs the steps below inside its compiled loop. These helpers are the
same mechanism (bp/_mpi.py) for a loop of your own.

Each rank (process) holds the same model and its own shard of the rows. One step is::

    zero_grad; backward(X_shard_batch, total_samples=global batch); allreduce_gradients; step

The backward pass on a rank adds ``sum_i w_i dL_i / (N m)`` over its rows (N the GLOBAL batch
count given as total_samples, m the loss's output scale), so the SUM over ranks of the gradient
buffers is exactly the gradient of the global batch's mean: one process on the union of the
ranks' rows. Every rank then applies the same optimizer update to the same parameters, so the
ranks stay bit for bit identical as long as they start so (``broadcast_parameters``) and the
allreduce hands every rank the same sum (it does: the test suite checks it bit for bit).

bp links no MPI: its Cython build knows nothing of it. Everything here goes through mpi4py's
buffer interface (``comm.Allreduce``, ``comm.Bcast``) on NumPy arrays, imported lazily so that
``import bp`` works without mpi4py. Install with ``pip install "bp[mpi]"``; on a laptop or in CI
add ``pip install mpich`` (a PyPI MPI: ``mpiexec`` lands beside the venv's python). Launch::

    mpiexec -n 4 python -m mpi4py train.py

(``-m mpi4py`` makes an exception on one rank abort the job instead of deadlocking the others.)

Examples
--------
A loop of your own; under ``mpiexec -n p`` each rank runs it on its own rows:

>>> import numpy as np
>>> import bp
>>> from bp import distributed
>>> from mpi4py import MPI
>>> comm = MPI.COMM_WORLD                        # one rank when not under mpiexec
>>> rng = np.random.default_rng(0)
>>> X, y = rng.standard_normal((256, 8)), rng.integers(0, 3, 256)   # every rank: the same data
>>> X_mine, y_mine = distributed.shard_rows(X, comm), distributed.shard_rows(y, comm)
>>> model = bp.Sequential([bp.Dense(16, activation="relu"), bp.Dense(3, activation="softmax")],
...                       seed=0).build(X.shape[1])
>>> opt = bp.Adam(1e-2)
>>> distributed.broadcast_parameters(model, comm)
>>> b, p = 32, comm.Get_size()
>>> for start in range(0, len(X_mine), b):          # every rank runs the same number of steps
...     model.zero_grad()
...     _ = model.backward(X_mine[start:start + b], y_mine[start:start + b], total_samples=p * b)
...     _ = distributed.allreduce_gradients(model, comm)
...     model.step(opt)
"""

from ._mpi import (allreduce_gradients, broadcast_parameters, check_same_model, check_world,
                   local_threads, shard, shard_rows)

__all__ = ["shard", "shard_rows", "broadcast_parameters", "allreduce_gradients", "check_world",
           "check_same_model", "local_threads"]
