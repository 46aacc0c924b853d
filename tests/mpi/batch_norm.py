"""Run under mpiexec by tests/test_distributed.py: a BatchNormalization keeps its statistics per
rank, as PyTorch's DistributedDataParallel without SyncBatchNorm.

In training each rank normalises by its own micro-batch's mean and variance and updates its own
running statistics; only the gradients are summed over the ranks. So the parameters stay bit for
bit the same on every rank while the running statistics differ. With the BatchNormalization
first, its statistics depend on the rank's rows alone, and they equal the Keras-convention
update replayed in NumPy over that rank's batches.
"""

import numpy as np
from mpi4py import MPI

import bp
from bp import distributed

comm = MPI.COMM_WORLD
rank, p = comm.Get_rank(), comm.Get_size()
n, n_features, b, epochs, momentum = 12 * p, 4, 3, 2, 0.8
rng = np.random.default_rng(7)
X = rng.standard_normal((n, n_features)) * np.arange(1, n_features + 1) + np.arange(n)[:, None] / n
y = rng.integers(0, 3, n)
mine = distributed.shard(n, comm)

model = bp.Sequential([bp.BatchNormalization(momentum=momentum), bp.Dense(6, activation="tanh"),
                       bp.BatchNormalization(), bp.Dense(3, activation="softmax")],
                      dtype="float64", seed=rank)  # fit broadcasts rank 0's weights
model.fit(X[mine], y[mine], batch_size=b, epochs=epochs, shuffle=False, verbose=0, comm=comm)

everyone = comm.allgather((model.get_flat_params(), model[0].running.copy(),
                           model[2].running.copy()))
for r, (params, first, second) in enumerate(everyone):
    assert np.array_equal(params, model.get_flat_params()), f"parameters of rank {r} differ"
    if r != rank:  # each rank's own rows: its own statistics
        assert not np.allclose(first, model[0].running), f"ranks {r} and {rank} share statistics"
        assert not np.allclose(second, model[2].running), f"ranks {r} and {rank} share statistics"

mean, var = np.zeros(n_features), np.ones(n_features)
for _ in range(epochs):
    for start in range(0, len(X[mine]), b):
        batch = X[mine][start:start + b]
        mean = momentum * mean + (1 - momentum) * batch.mean(axis=0)
        var = momentum * var + (1 - momentum) * batch.var(axis=0, ddof=1)
np.testing.assert_allclose(model[0].moving_mean, mean, rtol=1e-12, atol=1e-12)
np.testing.assert_allclose(model[0].moving_variance, var, rtol=1e-12, atol=1e-12)
comm.Barrier()
if rank == 0:
    print(f"ok p={p}")
